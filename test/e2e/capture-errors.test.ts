// Capture's errors without touching any nat table: no iptables on PATH stops an agent with MESH_ERR_CAPTURE, and the
// capture commands refuse bad arguments. (Rules are programmed only in test/hosts/capture.test.ts, inside namespaces.)

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TestMesh, type ServerHandle } from '../helpers/mesh';
import { freePort, runMeshAgent } from '../helpers/processes';

describe('capture errors', () => {
  const mesh = new TestMesh();
  let server: ServerHandle;
  // A PATH with nothing on it: iptables-save and iptables-restore cannot be found.
  const emptyPath = mkdtempSync(join(tmpdir(), 'no-iptables-'));

  before(async () => {
    server = await mesh.startServer();
  });
  after(async () => {
    await mesh.close();
    rmSync(emptyPath, { recursive: true, force: true });
  });

  it('an agent with capture on and no iptables does not start, and says what to install', async () => {
    const dns = await freePort();
    const config = mesh.writeConfig(
      'capture.yaml',
      `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nservices:\n  - { name: web, port: 8080, upstreams: [{ service: api, port: ${await freePort()}, servicePort: 8080 }] }\ncapture: { enabled: true, dns: { listen: "127.0.0.1:${dns}" } }\n`,
    );
    const r = await mesh.failAgent('capture', config, { join: await mesh.token(server), env: { PATH: emptyPath } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error: MESH_ERR_CAPTURE: iptables-save is not installed \(apt-get install iptables\)/);
  });

  it('the capture commands: a bad --agent-uid is a usage error, a missing iptables a MESH_ERR_CAPTURE', async () => {
    const config = mesh.writeConfig('plain.yaml', 'services: [{ name: web, port: 8080 }]\n');
    const usage = await runMeshAgent(['capture', 'install', '-c', config, '--agent-uid', 'mesh-agent'], { PATH: emptyPath });
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /MESH_ERR_USAGE: --agent-uid: got "mesh-agent", expected a numeric uid/);
    for (const cmd of [['status'], ['remove'], ['install', '-c', config]]) {
      const r = await runMeshAgent(['capture', ...cmd], { PATH: emptyPath });
      assert.equal(r.code, 1, `capture ${cmd[0]}`);
      assert.match(r.stderr, /MESH_ERR_CAPTURE: iptables-save is not installed/);
    }
    const help = await runMeshAgent(['capture', 'install', '--help']);
    assert.match(help.stdout, /Examples:\n {2}\$ sudo mesh-agent capture install -c/);
  });
});
