// better-sqlite3's native addon: from node_modules normally; inside the single-file binary, the embedded copy written beside the database.

import { createHash } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as sea from 'node:sea';
import { MeshError } from '../errors';

/** The asset name packaging/build-binary.ts embeds the addon under. */
export const ADDON_ASSET = 'better_sqlite3.node';

let loaded: object | undefined;

/**
 * The addon object to pass as better-sqlite3's `nativeBinding`, or undefined when running from the source tree
 * or npm (better-sqlite3 then finds its own build). In the single-file binary the embedded addon is written to
 * `<dir>/.better_sqlite3-<sha256 prefix>.node` (once; rewritten if its bytes differ) and loaded from there:
 * a native library can only be loaded from a file.
 * @throws MeshError MESH_ERR_STORE when the file cannot be written or loaded.
 */
export function sqliteAddon(dir: string): object | undefined {
  if (loaded || !sea.isSea()) return loaded;
  const bytes = Buffer.from(sea.getRawAsset(ADDON_ASSET) as ArrayBuffer);
  const digest = createHash('sha256').update(bytes).digest('hex');
  const file = join(dir, `.better_sqlite3-${digest.slice(0, 16)}.node`);
  try {
    if (!sameBytes(file, digest)) {
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, bytes, { mode: 0o500 });
      renameSync(tmp, file);
    }
    const m = { exports: {} };
    process.dlopen(m, file);
    loaded = m.exports;
    return loaded;
  } catch (err) {
    throw new MeshError('MESH_ERR_STORE', `cannot load the embedded SQLite addon from ${file}: ${(err as Error).message}`, { cause: err });
  }
}

function sameBytes(file: string, digest: string): boolean {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('hex') === digest;
  } catch {
    return false;
  }
}
