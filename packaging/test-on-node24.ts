// `npm run test:node24`: the whole suite again on the binary's Node.js 24, with better-sqlite3 built for that runtime.

import { spawnSync } from 'node:child_process';
import { copyFileSync, lstatSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './build-binary';
import { nodeRuntime, SEA_NODE, sqliteAddonFor } from './node-runtime';

/**
 * Swaps node_modules' better-sqlite3 addon for one built for Node.js 24 (its ABI differs from 20's), runs `npm test`
 * with that Node.js first on PATH, and puts the original addon back. Returns npm's exit status.
 */
export function testOnNode24(): number {
  if (lstatSync(join(ROOT, 'node_modules')).isSymbolicLink()) {
    throw new Error('node_modules is a symlink to a shared checkout: swapping its native addon would break the other checkout; run `npm ci` here first');
  }
  const nodeDir = nodeRuntime();
  const installed = join(ROOT, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node');
  const saved = join(mkdtempSync(join(tmpdir(), 'mesh-node24-')), 'better_sqlite3.node');
  copyFileSync(installed, saved);
  // Unlink before copying: node-gyp leaves the addon hard-linked into obj.target, which must keep its bytes.
  const replace = (from: string): void => {
    rmSync(installed);
    copyFileSync(from, installed);
  };
  replace(sqliteAddonFor(nodeDir, ROOT));
  try {
    process.stdout.write(`npm test on Node.js v${SEA_NODE.version} (${nodeDir})\n`);
    const r = spawnSync('npm', ['test'], { cwd: ROOT, stdio: 'inherit', env: { ...process.env, MESH_TEST_SECOND_PASS: '1', MESH_FAILURE_SECONDS: process.env.MESH_FAILURE_SECONDS ?? '6', PATH: `${join(nodeDir, 'bin')}:${process.env.PATH}` } });
    return r.status ?? 1;
  } finally {
    replace(saved);
    rmSync(join(saved, '..'), { recursive: true, force: true });
  }
}

if (require.main === module) process.exitCode = testOnNode24();
