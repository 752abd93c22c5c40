// Unit tests for the admin API's policy routes over a real socket: bad requests get JSON errors naming the problem,
// nothing is stored for them, and the server keeps answering.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { CertificateAuthority } from '../../src/ca';
import { printServerStatus } from '../../src/cli/status-output';
import { createAdminHandler } from '../../src/server/admin-api';
import { PolicyService } from '../../src/server/policy-service';
import { Store } from '../../src/store';
import { silentLogger } from '../../src/telemetry';

const TOKEN = 'admin-secret';
const VS = 'apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: reviews }\nspec:\n  hosts: [reviews]\n  http:\n    - route: [{ destination: { host: reviews } }]\n';

describe('admin API: policy routes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mesh-policy-api-'));
  let store: Store;
  let server: Server;
  let base = '';

  before(async () => {
    store = Store.open(join(dir, 'mesh.db'));
    store.agents.insert({ id: 'aaaaaaaaaaaaaaaa', nodeName: 'node-a', address: '', enrolledAt: 1, joinTokenId: null });
    store.agents.recordPolicyRefusal('aaaaaaaaaaaaaaaa', 3, 'MESH_ERR_POLICY_SIGNATURE: bad', 1_800_000_000_000);
    const policy = new PolicyService({ store, connected: () => new Map(), committed: () => {}, now: Date.now, log: silentLogger });
    server = createServer(
      createAdminHandler({
        store,
        ca: CertificateAuthority.create('mesh.local'),
        policy,
        adminToken: TOKEN,
        advertise: '127.0.0.1:15010',
        listen: '127.0.0.1:15010',
        workloadCertTtlMs: 86_400_000,
        connected: () => new Map(),
        startedAt: Date.now(),
        now: Date.now,
        log: silentLogger,
      }),
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function call(method: 'GET' | 'POST', path: string, body?: string, token = TOKEN): Promise<{ status: number; json: Record<string, unknown> & { error?: { code: string; message: string; problems?: unknown[] } } }> {
    const res = await request(`${base}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, ...(body !== undefined ? { body } : {}) });
    const text = await res.body.text();
    assert.equal(res.headers['content-type'], 'application/json', `${method} ${path} answers JSON`);
    return { status: res.statusCode, json: JSON.parse(text) as never };
  }

  async function refused(method: 'GET' | 'POST', path: string, body: string | undefined, status: number, code: string, message: RegExp): Promise<void> {
    const r = await call(method, path, body);
    assert.equal(r.status, status, JSON.stringify(r.json));
    assert.equal(r.json.error?.code, code);
    assert.match(r.json.error!.message, message);
  }

  test('apply, get and history answer with versions, documents as applied, and who made each version', async () => {
    const r = await call('POST', '/v1/policy/apply', JSON.stringify({ files: [{ name: 'vs.yaml', text: VS }] }));
    assert.equal(r.status, 200);
    assert.equal(r.json.version, 1);
    assert.equal(r.json.created, true);
    const got = await call('GET', '/v1/policy?kind=VirtualService&namespace=default&name=reviews');
    assert.equal((got.json.documents as { source: string }[])[0]!.source, VS);
    const history = await call('GET', '/v1/policy/history');
    const v = (history.json.versions as { version: number; actor: string; createdAt: string }[])[0]!;
    assert.equal(v.version, 1);
    assert.equal(v.actor, 'admin');
    assert.match(v.createdAt, /^\d{4}-\d\d-\d\dT/);
  });

  test('malformed apply bodies are refused with a message naming the field', async () => {
    const cases: [string, RegExp][] = [
      ['not json', /apply request is not valid JSON/],
      ['[]', /apply request must be a JSON object/],
      ['{}', /apply request\.files: expected a non-empty list/],
      ['{"files": []}', /apply request\.files: expected a non-empty list/],
      ['{"files": ["vs.yaml"]}', /apply request\.files\[0\] must be a JSON object/],
      ['{"files": [{"text": "x"}]}', /apply request\.files\[0\]\.name: got undefined, expected a non-empty string/],
      ['{"files": [{"name": "a", "text": 3}]}', /apply request\.files\[0\]\.text: expected the file's text as a string/],
      ['{"files": [{"name": "a", "text": "", "mode": 1}]}', /apply request\.files\[0\]: unknown field "mode" \(known: name, text\)/],
      ['{"files": [{"name": "a", "text": ""}], "force": true}', /apply request: unknown field "force" \(known: files, dryRun\)/],
      ['{"files": [{"name": "a", "text": ""}], "dryRun": "yes"}', /apply request\.dryRun: got "yes", expected true or false/],
    ];
    for (const [body, message] of cases) await refused('POST', '/v1/policy/apply', body, 400, 'MESH_ERR_BAD_REQUEST', message);
    await refused('POST', '/v1/policy/apply', JSON.stringify({ files: [{ name: 'big', text: 'x'.repeat(9 * 1024 * 1024) }] }), 413, 'MESH_ERR_TOO_LARGE', /request body is larger than 8388608 bytes/);
  });

  test('an invalid document answers 400 with every problem listed, located, and stores nothing', async () => {
    const bad = VS.replace('{ host: reviews } }', '{ host: reviews }, weight: 150 }').replace('hosts: [reviews]', 'hosts: [reviews]\n  gateways: [mesh]');
    const r = await call('POST', '/v1/policy/apply', JSON.stringify({ files: [{ name: 'bad.yaml', text: bad }] }));
    assert.equal(r.status, 400);
    assert.equal(r.json.error!.code, 'MESH_ERR_POLICY_INVALID');
    const problems = r.json.error!.problems as { file: string; document: number; line: number; path: string }[];
    assert.deepEqual(
      problems.map((p) => [p.file, p.document, p.line, p.path]),
      [
        ['bad.yaml', 1, 6, 'spec.gateways'],
        ['bad.yaml', 1, 8, 'spec.http[0].route[0].weight'],
      ],
    );
    assert.equal(store.policy.headVersion(), 1);
  });

  test('delete, rollback and the queries refuse bad fields and unknown documents', async () => {
    await refused('POST', '/v1/policy/delete', '{"kind": "Gateway", "name": "x"}', 400, 'MESH_ERR_BAD_REQUEST', /delete request\.kind: got "Gateway", expected one of VirtualService, DestinationRule, ServiceEntry, PeerAuthentication, AuthorizationPolicy/);
    await refused('POST', '/v1/policy/delete', '{"kind": "VirtualService"}', 400, 'MESH_ERR_BAD_REQUEST', /delete request\.name: got undefined/);
    await refused('POST', '/v1/policy/delete', '{"kind": "VirtualService", "name": "nope"}', 404, 'MESH_ERR_NOT_FOUND', /policy version 1 has no VirtualService default\/nope/);
    for (const to of ['-1', '"2"', '1.5', 'null']) await refused('POST', '/v1/policy/rollback', `{"to": ${to}}`, 400, 'MESH_ERR_BAD_REQUEST', /rollback request\.to: got .*, expected a version number/);
    await refused('POST', '/v1/policy/rollback', '{"to": 99}', 404, 'MESH_ERR_NOT_FOUND', /there is no policy version 99/);
    await refused('GET', '/v1/policy?colour=red', undefined, 400, 'MESH_ERR_BAD_REQUEST', /unknown query parameter "colour"/);
    await refused('GET', '/v1/policy?kind=virtualservice', undefined, 400, 'MESH_ERR_BAD_REQUEST', /policy query kind: got "virtualservice"/);
    await refused('GET', '/v1/policy?name=reviews', undefined, 400, 'MESH_ERR_BAD_REQUEST', /name needs a kind/);
    await refused('GET', '/v1/policy?kind=DestinationRule&name=reviews', undefined, 404, 'MESH_ERR_NOT_FOUND', /policy version 1 has no DestinationRule/);
    await refused('GET', '/v1/policy/history?limit=0', undefined, 400, 'MESH_ERR_BAD_REQUEST', /history query limit: got "0", expected an integer from 1 to 10000/);
    await refused('POST', '/v1/policy', '{}', 404, 'MESH_ERR_NOT_FOUND', /no admin route POST \/v1\/policy/);
  });

  test('policy routes need the admin token', async () => {
    const r = await call('POST', '/v1/policy/apply', JSON.stringify({ files: [{ name: 'vs.yaml', text: VS }] }), 'wrong');
    assert.equal(r.status, 401);
    assert.equal(r.json.error?.code, 'MESH_ERR_ADMIN_AUTH');
  });

  test('after all of that the server still answers, with only the good version stored; status shows each agent\'s policy state', async () => {
    const r = await call('GET', '/v1/status');
    assert.equal(r.status, 200);
    assert.deepEqual(r.json.policy, { version: 1 });
    const agent = (r.json.agents as { policy: unknown }[])[0]!;
    assert.deepEqual(agent.policy, { version: null, override: false, error: { version: 3, message: 'MESH_ERR_POLICY_SIGNATURE: bad', at: new Date(1_800_000_000_000).toISOString() } });
    // `mesh-agent status` prints the same: per agent whether it is connected, the version it holds, its last NACK.
    const printed: string[] = [];
    const write = process.stdout.write;
    process.stdout.write = ((chunk: string) => printed.push(chunk) > 0) as typeof process.stdout.write;
    try {
      printServerStatus(r.json);
    } finally {
      process.stdout.write = write;
    }
    const text = printed.join('');
    assert.match(text, /^AGENT\s+NODE\s+ADDRESS\s+STATE\s+LAST CONTACT\s+SERVICES\s+POLICY\s+CERT EXPIRES$/m);
    assert.match(text, /^aaaaaaaaaaaaaaaa\s+node-a\s+-\s+disconnected\s+never\s+-\s+-, refused v3\s+-$/m);
    assert.match(text, /^node-a \(aaaaaaaaaaaaaaaa\) refused policy version 3 .*: MESH_ERR_POLICY_SIGNATURE: bad$/m);
    assert.deepEqual(
      store.policy.history().map((v) => v.version),
      [1],
    );
  });

  test('named admin tokens: made by an admin token, stored as a hash, recorded in history by name, refused once revoked', async () => {
    const made = await call('POST', '/v1/admin-tokens', JSON.stringify({ name: 'alice' }));
    assert.equal(made.status, 201, JSON.stringify(made.json));
    const token = made.json.token as string;
    assert.match(token, /^meshadmin1_alice_[A-Za-z0-9_-]{32}$/);
    const row = store.adminTokens.get('alice')!;
    assert.equal(row.createdBy, 'admin');
    assert.ok(!token.includes(row.secretHash) && row.secretHash.length === 64, 'only the SHA-256 of the secret is stored');

    const applied = await call('POST', '/v1/policy/apply', JSON.stringify({ files: [{ name: 'vs.yaml', text: VS.replace('reviews } }', 'reviews }, weight: 100 }') }] }), token);
    assert.equal(applied.status, 200, JSON.stringify(applied.json));
    const versions = (await call('GET', '/v1/policy/history')).json.versions as { version: number; actor: string }[];
    assert.deepEqual(
      versions.map((v) => [v.version, v.actor]),
      [
        [2, 'alice'],
        [1, 'admin'],
      ],
    );
    const listed = (await call('GET', '/v1/admin-tokens')).json.tokens as Record<string, unknown>[];
    assert.deepEqual(Object.keys(listed[0]!).sort(), ['createdAt', 'createdBy', 'lastUsedAt', 'name'], 'never a secret or hash');
    assert.equal(listed[0]!.name, 'alice');
    assert.notEqual(listed[0]!.lastUsedAt, null);

    const bob = (await call('POST', '/v1/admin-tokens', JSON.stringify({ name: 'bob' }), token)).json;
    assert.equal(bob.createdBy, 'alice', 'a named token can make others; the maker is recorded');
    assert.equal((await call('POST', '/v1/admin-tokens/revoke', JSON.stringify({ name: 'alice' }), bob.token as string)).status, 200);
    const after = await call('GET', '/v1/policy/history', undefined, token);
    assert.equal(after.status, 401);
    assert.equal(after.json.error?.code, 'MESH_ERR_ADMIN_AUTH');
    const forged = await call('GET', '/v1/status', undefined, `${(bob.token as string).slice(0, -2)}xx`);
    assert.equal(forged.status, 401, 'a wrong secret under a valid name is refused');
  });

  test('named admin tokens: bad names, the reserved name, duplicates and unknown tokens are refused clearly', async () => {
    await refused('POST', '/v1/admin-tokens', '{"name":"Alice Smith"}', 400, 'MESH_ERR_BAD_REQUEST', /name: got "Alice Smith", expected lower-case letters, digits/);
    await refused('POST', '/v1/admin-tokens', '{"name":"admin"}', 400, 'MESH_ERR_BAD_REQUEST', /"admin" is the bootstrap token's name/);
    await refused('POST', '/v1/admin-tokens', '{"name":"bob","role":"x"}', 400, 'MESH_ERR_BAD_REQUEST', /unknown field "role"/);
    await refused('POST', '/v1/admin-tokens', '{"name":"bob"}', 400, 'MESH_ERR_BAD_REQUEST', /named "bob" exists already/);
    await refused('POST', '/v1/admin-tokens/revoke', '{"name":"carol"}', 404, 'MESH_ERR_NOT_FOUND', /no admin token named "carol"/);
  });
});
