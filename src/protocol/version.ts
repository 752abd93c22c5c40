// The program's version (package.json, or embedded in a release build) and, for release builds, the git commit.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RELEASE_BUILD } from './release-build';

function readVersion(): string {
  for (const up of ['../../..', '../..']) {
    try {
      return (JSON.parse(readFileSync(join(__dirname, up, 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      // try the next layout (compiled dist/ or source)
    }
  }
  return '0.0.0';
}

export const MESH_VERSION = RELEASE_BUILD?.version ?? readVersion();

/** The git commit a release build was made from (with `-dirty` if the tree had changes); null when running from source or npm. */
export const MESH_COMMIT = RELEASE_BUILD?.commit ?? null;
