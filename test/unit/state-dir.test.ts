// Unit tests for the agent's StateDir writes: atomic files, and sets of files that are replaced together or not at all.

import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { StateDir } from '../../src/agent/state-dir';

const dir = mkdtempSync(join(tmpdir(), 'mesh-statedir-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('StateDir', () => {
  test('writeAll replaces a key and its certificate together; when one cannot be written, neither changes and no temporary file stays', () => {
    const state = new StateDir(dir);
    state.writeAll([
      { name: 'workloads/default.web.key', content: 'key 1', mode: 0o600 },
      { name: 'workloads/default.web.crt', content: 'cert 1', mode: 0o644 },
    ]);
    assert.throws(
      () =>
        state.writeAll([
          { name: 'workloads/default.web.key', content: 'key 2', mode: 0o600 },
          { name: 'no-such-dir/default.web.crt', content: 'cert 2', mode: 0o644 },
        ]),
      (err: Error & { code?: string }) => err.code === 'MESH_ERR_STATE_DIR' && /cannot write .*no-such-dir\/default\.web\.crt: ENOENT/.test(err.message),
    );
    assert.equal(state.read('workloads/default.web.key'), 'key 1', 'the first file was not replaced on its own');
    assert.equal(state.read('workloads/default.web.crt'), 'cert 1');
    assert.deepEqual(readdirSync(join(dir, 'workloads')).filter((f) => f.endsWith('.tmp')), []);
  });

  test('a state dir that cannot be made or used is a clear error', () => {
    writeFileSync(join(dir, 'a-file'), '');
    assert.throws(() => new StateDir(join(dir, 'a-file')), (err: Error & { code?: string }) => err.code === 'MESH_ERR_STATE_DIR' && /cannot use state dir .*a-file, which must be a writable directory: ENOTDIR/.test(err.message));
  });
});
