// Enrollment with join tokens: good once, then refused as used / expired / unknown / tampered / damaged; restarts need no token.

import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { formatJoinToken, parseJoinToken } from '../../src/ca';
import { TestMesh, type ServerHandle } from '../helpers/mesh';
import { runMeshAgent } from '../helpers/processes';

const mode = (file: string): number => statSync(file).mode & 0o777;

describe('enrollment', () => {
  const mesh = new TestMesh();
  let server: ServerHandle;
  let config: string;

  before(async () => {
    server = await mesh.startServer();
    config = mesh.writeConfig('agent.yaml', 'inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nservices:\n  - { name: web, port: 8080, protocol: http }\n');
  });
  after(() => mesh.close());

  it('enrolls with a good token, keeps keys 0600, and a restart needs no token', async () => {
    const token = await mesh.token(server);
    const agent = await mesh.startAgent('good', config, { join: token });
    for (const f of ['node.key', 'workloads/default.web.key', 'admin-token', 'agent.json']) assert.equal(mode(join(agent.stateDir, f)), 0o600, `${f} is 0600`);
    assert.equal(mode(join(server.dataDir, 'mesh.db')), 0o600);
    assert.equal(mode(join(server.dataDir, 'admin-token')), 0o600);
    const agentId = (JSON.parse(readFileSync(join(agent.stateDir, 'agent.json'), 'utf8')) as { agentId: string }).agentId;
    assert.equal(await agent.proc.stop('SIGTERM'), 0, 'clean shutdown exits 0');

    const again = await mesh.startAgent('good', config, { stateDir: agent.stateDir });
    assert.equal((JSON.parse(readFileSync(join(again.stateDir, 'agent.json'), 'utf8')) as { agentId: string }).agentId, agentId);
    await again.proc.waitFor(/connected to server/);
    const status = await runMeshAgent(['status', '--admin', server.adminAddr, '--data-dir', server.dataDir, '-o', 'json']);
    const agents = (JSON.parse(status.stdout) as { agents: { id: string; connected: boolean }[] }).agents;
    assert.equal(agents.filter((x) => x.id === agentId).length, 1, 'the restarted agent is the same agent, not a new enrollment');
  });

  it('refuses a token that was already used', async () => {
    const token = await mesh.token(server);
    await mesh.startAgent('first', config, { join: token });
    const r = await mesh.failAgent('second', config, { join: token });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /MESH_ERR_TOKEN_USED: enrollment refused: join token [0-9a-f]{8} was already used \(1 of 1 use\)/);
  });

  it('allows a token with --uses 2 exactly twice', async () => {
    const token = await mesh.token(server, { uses: 2 });
    await mesh.startAgent('twice-1', config, { join: token });
    await mesh.startAgent('twice-2', config, { join: token });
    const r = await mesh.failAgent('twice-3', config, { join: token });
    assert.match(r.stderr, /MESH_ERR_TOKEN_USED/);
  });

  it('refuses an expired token', async () => {
    const token = await mesh.token(server, { ttl: '1ms' });
    const r = await mesh.failAgent('late', config, { join: token });
    assert.match(r.stderr, /MESH_ERR_TOKEN_EXPIRED: enrollment refused: join token [0-9a-f]{8} expired at /);
  });

  it('refuses an unknown token', async () => {
    const t = parseJoinToken(await mesh.token(server));
    const r = await mesh.failAgent('stranger', config, { join: formatJoinToken({ ...t, id: '0badc0de' }) });
    assert.match(r.stderr, /MESH_ERR_TOKEN_UNKNOWN: enrollment refused: join token 0badc0de is unknown to this server/);
  });

  it('refuses a tampered token (secret changed, checksum recomputed)', async () => {
    const t = parseJoinToken(await mesh.token(server));
    const r = await mesh.failAgent('forger', config, { join: formatJoinToken({ ...t, secret: `${t.secret.slice(0, -4)}AAAA` }) });
    assert.match(r.stderr, /MESH_ERR_TOKEN_TAMPERED: enrollment refused: join token [0-9a-f]{8} was tampered with/);
    // The forged attempt did not use the token up: the real one still works.
    await mesh.startAgent('owner', config, { join: formatJoinToken(t) });
  });

  it('refuses a token damaged in copying, before contacting the server', async () => {
    const token = await mesh.token(server);
    const i = token.length - 12;
    const damaged = token.slice(0, i) + (token[i] === 'A' ? 'B' : 'A') + token.slice(i + 1);
    const r = await mesh.failAgent('typo', config, { join: damaged });
    assert.match(r.stderr, /MESH_ERR_TOKEN_MALFORMED: join token is malformed: checksum does not match/);
  });

  it('refuses to enroll with a server whose CA is not the pinned one', async () => {
    const t = parseJoinToken(await mesh.token(server));
    const r = await mesh.failAgent('pinned', config, { join: formatJoinToken({ ...t, caFingerprint: `sha256:${'ab'.repeat(32)}` }) });
    assert.match(r.stderr, /MESH_ERR_CA_PIN_MISMATCH/);
  });

  it('refuses to start without enrollment and without a token, saying how to fix it', async () => {
    const r = await mesh.failAgent('nobody', config);
    assert.match(r.stderr, /MESH_ERR_NOT_ENROLLED: no enrollment in .*start once with --join <token>/);
  });
});
