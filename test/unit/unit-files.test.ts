// The shipped systemd units pass `systemd-analyze verify` (with the binary path pointed at a stand-in).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { tempDir } from '../helpers/processes';

const ROOT = join(__dirname, '..', '..', '..');

describe('systemd units', () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  for (const unit of ['mesh-agent.service', 'mesh-server.service']) {
    it(`${unit} verifies and runs the mesh-agent binary`, () => {
      const text = readFileSync(join(ROOT, 'systemd', unit), 'utf8');
      assert.match(text, /^ExecStart=\/usr\/bin\/mesh-agent (agent|server)/m);
      // The package installs /usr/bin/mesh-agent; here verify against a binary that exists.
      const copy = join(tmp.dir, unit);
      writeFileSync(copy, text.replaceAll('/usr/bin/mesh-agent', process.execPath));
      const r = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8' });
      assert.equal(r.error, undefined, 'systemd-analyze is installed (.ci/test-deps.sh installs it)');
      assert.equal(r.stderr.trim(), '', r.stderr);
      assert.equal(r.status, 0);
    });
  }
});
