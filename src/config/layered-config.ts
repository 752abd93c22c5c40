// One config from three layers: a file, then MESH_* environment variables, then command-line flags.

import { dirname, resolve } from 'node:path';
import { emptySource, readConfigFile, type ConfigSource } from './config-source';
import { overlay, ProblemList } from './field-reader';

/** A setting that a flag and an environment variable can set, and the field path it sets. */
export interface LayeredSetting {
  readonly flag: string;
  readonly env: string;
  readonly path: string;
}

/** Where a layered config's values came from, ready for a FieldReader. */
export interface LayeredInput {
  readonly data: unknown;
  readonly problems: ProblemList;
  /** The directory relative paths in the file are relative to (cwd when there is no file). */
  readonly baseDir: string;
  readonly source: ConfigSource;
}

/** "data-dir" -> "dataDir", as commander names parsed options. */
export function flagKey(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/**
 * Reads the file (if any) and overlays env, then flags (flags win), recording each overlaid value's origin
 * so a problem with it names the flag or variable. @throws MeshError MESH_ERR_CONFIG when the file is unreadable
 */
export function readLayers(settings: readonly LayeredSetting[], opts: { file?: string; flags?: Record<string, unknown>; env?: NodeJS.ProcessEnv }): LayeredInput {
  const source = opts.file ? readConfigFile(opts.file) : emptySource();
  const problems = new ProblemList(source);
  const data = source.data;
  if (typeof data === 'object' && data !== null && !Array.isArray(data)) {
    for (const s of settings) {
      const fromEnv = opts.env?.[s.env];
      if (fromEnv !== undefined && fromEnv !== '') overlay(data as Record<string, unknown>, s.path, fromEnv, `env ${s.env}`, problems);
      const fromFlag = opts.flags?.[flagKey(s.flag)];
      if (fromFlag !== undefined) overlay(data as Record<string, unknown>, s.path, fromFlag, `--${s.flag}`, problems);
    }
  }
  return { data, problems, baseDir: opts.file ? dirname(resolve(opts.file)) : process.cwd(), source };
}
