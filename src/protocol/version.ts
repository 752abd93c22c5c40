// The program's version, read once from package.json.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

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

export const MESH_VERSION = readVersion();
