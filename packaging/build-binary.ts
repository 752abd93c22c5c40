// `npm run build:binary`: the single-file mesh-agent executable (Node.js Single Executable Application) in build/mesh-agent.

import { chmodSync, copyFileSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { bundle } from './bundle';
import { nodeRuntime, run, SEA_NODE, sqliteAddonFor } from './node-runtime';

export const ROOT = resolve(__dirname, '..', '..');

/** postject's sentinel: the fuse string Node.js checks to know a blob was injected (Node's SEA docs). */
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

export interface BuiltBinary {
  readonly path: string;
  readonly version: string;
  readonly commit: string;
  readonly bytes: number;
  /** The directories of the npm packages bundled in (for their license notices). */
  readonly packages: readonly string[];
}

/** `git rev-parse HEAD`, with `-dirty` when tracked files differ from it; `unknown` outside a git checkout. */
export function gitCommit(root = ROOT): string {
  try {
    const head = run('git', ['rev-parse', 'HEAD'], { cwd: root }).trim();
    const dirty = run('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root }).trim() !== '';
    return dirty ? `${head}-dirty` : head;
  } catch {
    return 'unknown';
  }
}

/**
 * Bundles dist/src (compile first: `tsc -p .`) with the runtime packages, embeds better-sqlite3's addon as an
 * asset, and injects the result into the pinned Node.js binary. Writes build/mesh-agent (and the bundle and its module
 * list in build/sea/).
 */
export function buildBinary(out = join(ROOT, 'build')): BuiltBinary {
  const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  const commit = gitCommit();
  const nodeDir = nodeRuntime();
  const addon = sqliteAddonFor(nodeDir, ROOT);
  const work = join(out, 'sea');
  mkdirSync(work, { recursive: true });

  const release = `"use strict";\nObject.defineProperty(exports, "__esModule", { value: true });\nexports.RELEASE_BUILD = ${JSON.stringify({ version, commit })};\n`;
  const b = bundle({ root: ROOT, entry: join(ROOT, 'dist', 'src', 'cli', 'main.js'), replace: { 'dist/src/protocol/release-build.js': release } });
  if (b.dynamic.length > 0) throw new Error(`computed require() calls cannot be bundled:\n  ${b.dynamic.join('\n  ')}`);
  writeFileSync(join(work, 'mesh-agent.js'), b.source);
  writeFileSync(join(work, 'modules.txt'), `${b.modules.join('\n')}\n\nnot resolved (fail if reached, unless built into Node):\n${b.unresolved.join('\n')}\n`);
  const packageDir = (m: string): string => m.split('/').slice(0, m.startsWith('node_modules/@') ? 3 : 2).join('/');
  const packages = [...new Set(b.modules.filter((m) => m.startsWith('node_modules/')).map(packageDir))];
  // useCodeCache: V8's compiled code goes into the blob, so start-up skips compiling the 3 MB script.
  const config = { main: join(work, 'mesh-agent.js'), output: join(work, 'sea-prep.blob'), disableExperimentalSEAWarning: true, useCodeCache: true, assets: { 'better_sqlite3.node': addon } };
  writeFileSync(join(work, 'sea-config.json'), JSON.stringify(config, null, 2));
  run(join(nodeDir, 'bin', 'node'), ['--experimental-sea-config', join(work, 'sea-config.json')]);

  // The runtime package's node carries debug info and symbols (~18 MB); strip them before injecting the blob.
  const tmp = join(out, 'mesh-agent.tmp');
  copyFileSync(join(nodeDir, 'bin', 'node'), tmp);
  chmodSync(tmp, 0o755);
  run('strip', ['--strip-all', tmp]);
  run(process.execPath, [require.resolve('postject/dist/cli.js'), tmp, 'NODE_SEA_BLOB', config.output, '--sentinel-fuse', SEA_FUSE]);
  const got = JSON.parse(run(tmp, ['version', '-o', 'json'])) as { version: string; commit: string; node: string };
  if (got.version !== version || got.commit !== commit || got.node !== `v${SEA_NODE.version}`) throw new Error(`the built binary reports ${JSON.stringify(got)}`);
  const path = join(out, 'mesh-agent');
  renameSync(tmp, path);
  return { path, version, commit, bytes: statSync(path).size, packages: packages.map((dir) => join(ROOT, dir)) };
}

if (require.main === module) {
  const started = Date.now();
  const b = buildBinary();
  process.stdout.write(`${b.path}: mesh-agent ${b.version} (commit ${b.commit}, node v${SEA_NODE.version}), ${(b.bytes / 1048576).toFixed(1)} MiB, built in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}
