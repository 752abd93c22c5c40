// Bad input on the server's admin API and to `apply`, and bad flags to the CLI: bad JSON, wrong types, huge bodies,
// broken YAML, alias bombs, deep nesting. Every answer is a JSON error with a code and the right status (never a
// 500), the server keeps answering with its store consistent and its memory bounded, and the CLI exits with a
// clear `error: MESH_ERR_...` line, never a stack trace.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { TestMesh, type ServerHandle } from '../helpers/mesh';
import { runMeshAgent } from '../helpers/processes';
import { eachLimited, rawExchange, rssKib, RSS_GROWTH_LIMIT_KIB, statusesOf } from './fuzz-client';
import { CORPUS_DIR, loadCorpus, Mutator } from './fuzz-input';

const CASES = { json: 600, yaml: 250 };
/** Nested 20 000 deep in flow style, and 3 000 deep in block style. */
const DEEP = ['['.repeat(20_000) + ']'.repeat(20_000), Array.from({ length: 3000 }, (_, i) => `${' '.repeat(i)}a:`).join('\n')];
const HUGE_APPLY = JSON.stringify({ files: [{ name: 'big', text: 'x'.repeat(9 << 20) }] });
const ROUTES = ['/v1/tokens', '/v1/policy/apply', '/v1/policy/delete', '/v1/policy/rollback'];

interface Answer {
  status: number;
  body: { error?: { code: string; message: string } };
}

describe('fuzz: the server admin API, apply and the CLI', () => {
  const mesh = new TestMesh();
  let server: ServerHandle;
  let token = '';
  let rssBefore = 0;
  const policies = loadCorpus('policy');

  const call = async (method: string, path: string, body?: string | Buffer, auth = `Bearer ${token}`): Promise<Answer> => {
    const res = await fetch(`http://${server.adminAddr}${path}`, { method, headers: { authorization: auth, 'content-type': 'application/json' }, ...(body !== undefined ? { body } : {}) });
    const text = await res.text();
    let parsed: Answer['body'];
    try {
      parsed = JSON.parse(text) as Answer['body'];
    } catch {
      throw new Error(`${method} ${path}: ${res.status} answered with a body that is not JSON: ${text.slice(0, 200)}`);
    }
    return { status: res.status, body: parsed };
  };
  /** An error answer: one of the expected statuses, a MESH_ERR_ code and a message. */
  const refused = (a: Answer, what: string, statuses = [400, 404, 413]): void => {
    assert.ok(statuses.includes(a.status), `${what}: status ${a.status} ${JSON.stringify(a.body).slice(0, 300)}`);
    assert.match(a.body.error?.code ?? '', /^MESH_ERR_[A-Z_]+$/, what);
    assert.ok((a.body.error?.message.length ?? 0) > 5, what);
  };
  const apply = (text: string, dryRun = true): Promise<Answer> => call('POST', '/v1/policy/apply', JSON.stringify({ files: [{ name: 'fuzz.yaml', text }], dryRun }));

  before(async () => {
    server = await mesh.startServer();
    token = readFileSync(join(server.dataDir, 'admin-token'), 'utf8').trim();
    // The largest cases once before the baseline: Node keeps the heap they grew, and the bound is on growth after.
    await apply(DEEP[0]!);
    await call('POST', '/v1/policy/apply', HUGE_APPLY);
    rssBefore = rssKib(server.proc.child.pid!);
  });
  after(() => mesh.close());

  it('answers the policy corpus as its file names say', async () => {
    for (const p of policies) {
      const a = await apply(p.bytes.toString('utf8'));
      if (p.expect === '200') assert.equal(a.status, 200, `${p.name}: ${JSON.stringify(a.body)}`);
      else {
        refused(a, p.name, [400]);
        assert.equal(a.body.error!.code, 'MESH_ERR_POLICY_INVALID');
      }
    }
    const bomb = await apply(policies.find((p) => p.name === 'alias-bomb')!.bytes.toString());
    assert.match(bomb.body.error!.message, /alias bomb/);
    for (const deep of DEEP) {
      const a = await apply(deep);
      refused(a, 'deep nesting', [400]);
      assert.match(a.body.error!.message, /nesting is too deep/);
    }
  });

  it('answers mutated policy YAML with 200 or a policy error', async (t) => {
    const m = new Mutator(23);
    const texts = Array.from({ length: CASES.yaml }, () => m.mutate(m.pick(policies).bytes).toString('utf8'));
    const answers = await eachLimited(texts, 8, (text) => apply(text));
    answers.forEach((a, i) => (a.status === 200 ? undefined : refused(a, `yaml case ${i} ${JSON.stringify(texts[i]!.slice(0, 100))}`, [400])));
    tally(t, 'apply (dry run)', answers);
  });

  it('answers bad JSON, wrong types and huge bodies with 400 or 413, and bad auth and paths with 401 and 404', async (t) => {
    const m = new Mutator(29);
    const values = (): unknown => m.pick<() => unknown>([() => null, () => m.int(1e9) - 5e8, () => -1, () => 1e308, () => 'x'.repeat(m.int(3000)), () => [], () => [[[{}]]], () => ({ a: { b: 1 } }), () => true, () => '', () => '../../etc/passwd', () => '\u0000'])();
    const keys = ['files', 'dryRun', 'ttl', 'uses', 'description', 'server', 'kind', 'name', 'namespace', 'to', 'key', 'text', '__proto__', 'constructor'];
    const bodies = Array.from({ length: CASES.json }, (_, i): string | Buffer => {
      if (i % 4 === 0) return m.bytes(m.int(200));
      const o: Record<string, unknown> = {};
      for (let k = m.int(4); k >= 0; k--) o[m.pick(keys)] = values();
      if (i % 4 === 1 && m.int(2) === 0) o.files = [{ name: values(), text: values() }];
      const text = JSON.stringify(o);
      return i % 4 === 2 ? m.mutate(Buffer.from(text)) : text;
    });
    const answers = await eachLimited(bodies, 16, (body) => call('POST', m.pick(ROUTES), body));
    answers.forEach((a, i) => (a.status < 300 ? undefined : refused(a, `json case ${i} ${JSON.stringify(bodies[i]!.toString().slice(0, 100))}`, [400, 404])));
    tally(t, 'admin POST bodies', answers);

    refused(await call('POST', '/v1/policy/apply', HUGE_APPLY), 'a 9 MiB apply', [413]);
    refused(await call('POST', '/v1/tokens', `{"description": "${'d'.repeat(100_000)}"}`), 'a 100 KB token request', [413]);
    refused(await call('GET', '/v1/status', undefined, 'Bearer wrong'), 'a wrong token', [401]);
    refused(await call('GET', '/v1/status', undefined, 'Basic abc'), 'no bearer token', [401]);
    refused(await call('DELETE', '/v1/policy'), 'an unknown route', [404]);
    refused(await call('GET', '/v1/policy?kind=Nope&name=' + 'n'.repeat(5000)), 'a bad query', [400, 404]);
    // Broken HTTP to the admin port: Node's parser answers 400 or closes; the server goes on.
    const port = Number(server.adminAddr.split(':')[1]);
    for (const raw of ['GET / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n', 'POST /v1/tokens HTTP/1.1\r\n\0\r\n\r\n', 'GET /' + 'a'.repeat(20_000) + ' HTTP/1.1\r\n\r\n']) {
      const o = await rawExchange(port, [Buffer.from(raw, 'latin1')]);
      assert.ok(!o.timedOut && (o.received.length === 0 || [400, 431].includes(statusesOf(o.received)[0]!)), o.received.toString('latin1', 0, 100));
    }
  });

  it('the CLI answers bad flags and bad files with an error line and exit code 1 or 2, never a stack trace', async () => {
    const admin = ['--admin', server.adminAddr, '--data-dir', server.dataDir];
    const bomb = join(CORPUS_DIR, 'policy', 'alias-bomb.400.yaml');
    // Each run starts Node (about 1 to 2 s here), so a few that reach different parsers: flags, files, the API.
    const runs: string[][] = [
      ['no-such-command', '--no-such-flag'],
      ['apply', '-f', '/nonexistent/policy.yaml', ...admin],
      ['apply', '-f', join(CORPUS_DIR, 'policy', 'broken-syntax.400.yaml'), '-o', 'json', ...admin],
      ['token', 'create', '--ttl', 'banana', ...admin],
      ['rollback', '--to', 'abc', ...admin],
      ['agent', '--config', bomb, '--inbound-listen', 'nowhere'],
    ];
    const results = await eachLimited(runs, 4, (args) => runMeshAgent(args));
    results.forEach((r, i) => {
      const what = `mesh-agent ${runs[i]!.join(' ')}`;
      assert.ok(r.code === 1 || r.code === 2, `${what}: exit code ${r.code}\n${r.stderr}`);
      assert.match(r.stderr + r.stdout, /error/i, what);
      assert.doesNotMatch(r.stderr, /^\s+at .+:\d+:\d+\)?$/m, `${what} printed a stack trace:\n${r.stderr}`);
    });
  });

  it('leaves the server answering, its store consistent and its memory within the bound', async (t) => {
    assert.ok(server.proc.running);
    const status = await call('GET', '/v1/status');
    assert.equal(status.status, 200);
    const history = (await call('GET', '/v1/policy/history')).body as unknown as { version: number; versions: { version: number }[] };
    assert.equal(history.versions[0]?.version ?? 0, history.version, 'the newest history entry is the current version');
    const grew = rssKib(server.proc.child.pid!) - rssBefore;
    t.diagnostic(`server: RSS grew by ${grew} KiB (bound ${RSS_GROWTH_LIMIT_KIB} KiB)`);
    assert.ok(grew < RSS_GROWTH_LIMIT_KIB, `server RSS grew by ${grew} KiB`);
  });
});

function tally(t: TestContext, where: string, answers: readonly Answer[]): void {
  const counts = new Map<string, number>();
  for (const a of answers) {
    const k = `${a.status}${a.body.error ? ` ${a.body.error.code}` : ''}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  t.diagnostic(`${where}: ${answers.length} cases: ${[...counts].sort().map(([k, n]) => `${k} ×${n}`).join(', ')}`);
}
