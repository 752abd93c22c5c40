// Pins the Consul stand-in's KV, session and transaction semantics (Consul's documented behaviour) that the HA server relies on.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ConsulStandin } from '../consul-standin/consul-standin';

const consul = new ConsulStandin({ waitJitter: false, minSessionTtlMs: 200 });
let base = '';
before(async () => {
  await consul.start(0);
  base = `http://${consul.address}`;
});
after(() => consul.close());

async function call(method: string, path: string, body?: string | unknown): Promise<{ status: number; headers: Headers; text: string; json: () => any }> {
  const res = await fetch(base + path, { method, ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }) });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) };
}
const index = (r: { headers: Headers }): number => Number(r.headers.get('x-consul-index'));
const session = async (body: unknown): Promise<string> => (await call('PUT', '/v1/session/create', body)).json().ID;

describe('consul stand-in KV', () => {
  test('PUT stores the raw body; GET answers base64 entries with indexes; a missing key is 404 with an index', async () => {
    assert.equal((await call('PUT', '/v1/kv/a/one?flags=7', 'hello')).json(), true);
    const got = await call('GET', '/v1/kv/a/one');
    const [e] = got.json();
    assert.equal(Buffer.from(e.Value, 'base64').toString(), 'hello');
    assert.equal(e.Flags, 7);
    assert.equal(e.LockIndex, 0);
    assert.equal(e.Session, undefined);
    assert.equal(e.CreateIndex, e.ModifyIndex);
    assert.equal(index(got), e.ModifyIndex);
    assert.equal((await call('GET', '/v1/kv/a/one?raw')).text, 'hello');
    await call('PUT', '/v1/kv/a/empty', '');
    assert.equal((await call('GET', '/v1/kv/a/empty')).json()[0].Value, null);
    const missing = await call('GET', '/v1/kv/a/nothing');
    assert.equal(missing.status, 404);
    assert.ok(index(missing) >= 1);
    assert.deepEqual((await call('GET', '/v1/kv/a/?keys')).json(), ['a/empty', 'a/one']);
    assert.deepEqual((await call('GET', '/v1/kv/a/?recurse')).json().map((x: any) => x.Key), ['a/empty', 'a/one']);
  });

  test('cas: 0 creates only when absent; otherwise the ModifyIndex must match', async () => {
    assert.equal((await call('PUT', '/v1/kv/c/k?cas=0', 'v1')).json(), true);
    assert.equal((await call('PUT', '/v1/kv/c/k?cas=0', 'v2')).json(), false);
    const [e] = (await call('GET', '/v1/kv/c/k')).json();
    assert.equal((await call('PUT', `/v1/kv/c/k?cas=${e.ModifyIndex + 1}`, 'v3')).json(), false);
    assert.equal((await call('PUT', `/v1/kv/c/k?cas=${e.ModifyIndex}`, 'v3')).json(), true);
    assert.equal((await call('PUT', `/v1/kv/c/k?cas=${e.ModifyIndex}`, 'v4')).json(), false, 'the index moved on');
    assert.equal((await call('PUT', '/v1/kv/c/k?cas=1&acquire=x', 'v')).status, 400, 'conflicting flags');
    assert.equal((await call('DELETE', '/v1/kv/c/k?cas=0')).json(), false, 'cas=0 never deletes');
    assert.equal((await call('DELETE', '/v1/kv/c/?recurse&cas=1')).status, 400);
  });

  test('a blocking query parks until the key (or prefix) changes, then answers the new index', async () => {
    await call('PUT', '/v1/kv/b/x', '1');
    const first = await call('GET', '/v1/kv/b/?recurse');
    const parked = call('GET', `/v1/kv/b/?recurse&index=${index(first)}&wait=5s`);
    await call('PUT', '/v1/kv/elsewhere', 'not under b/');
    await call('PUT', '/v1/kv/b/y', '2');
    const woke = await parked;
    assert.ok(index(woke) > index(first));
    assert.deepEqual(woke.json().map((x: any) => x.Key), ['b/x', 'b/y']);
    const beforeDelete = index(woke);
    const waiting = call('GET', `/v1/kv/b/?recurse&index=${beforeDelete}&wait=5s`);
    await call('DELETE', '/v1/kv/b/y');
    assert.ok(index(await waiting) > beforeDelete, 'a delete raises the prefix index');
    const t0 = Date.now();
    const timedOut = await call('GET', `/v1/kv/b/x?index=${index(await call('GET', '/v1/kv/b/x'))}&wait=150ms`);
    assert.ok(Date.now() - t0 >= 140);
    assert.equal(timedOut.status, 200, 'a wait that runs out answers the current data');
  });
});

describe('consul stand-in sessions and locks', () => {
  test('acquire locks a key for one session; others get false; release keeps LockIndex; a plain PUT keeps the lock', async () => {
    const s1 = await session({ Name: 'one', TTL: '10s', LockDelay: '0s' });
    const s2 = await session({ Name: 'two', TTL: '10s' });
    assert.equal((await call('PUT', `/v1/kv/l/leader?acquire=${s1}`, 'me')).json(), true);
    assert.equal((await call('PUT', `/v1/kv/l/leader?acquire=${s2}`, 'you')).json(), false);
    assert.equal((await call('PUT', `/v1/kv/l/leader?acquire=${s1}`, 'me again')).json(), true, 'the holder may acquire again');
    let [e] = (await call('GET', '/v1/kv/l/leader')).json();
    assert.equal(e.Session, s1);
    assert.equal(e.LockIndex, 1, 'acquiring again does not count');
    assert.equal((await call('PUT', '/v1/kv/l/leader', 'overwritten')).json(), true);
    [e] = (await call('GET', '/v1/kv/l/leader')).json();
    assert.equal(e.Session, s1, 'a plain PUT leaves the lock');
    assert.equal((await call('PUT', `/v1/kv/l/leader?release=${s2}`)).json(), false);
    assert.equal((await call('PUT', `/v1/kv/l/leader?release=${s1}`)).json(), true);
    [e] = (await call('GET', '/v1/kv/l/leader')).json();
    assert.equal(e.Session, undefined);
    assert.equal(e.LockIndex, 1);
    assert.equal((await call('PUT', `/v1/kv/l/leader?acquire=${s2}`, 'you')).json(), true);
    assert.equal((await call('GET', '/v1/kv/l/leader')).json()[0].LockIndex, 2);
    assert.equal((await call('PUT', '/v1/kv/l/leader?acquire=no-such-session')).status, 500);
  });

  test('TTL expiry invalidates the session, releases its locks, and the lock delay refuses acquire until it ends', async () => {
    const s1 = await session({ TTL: '300ms', LockDelay: '400ms' });
    const s2 = await session({ TTL: '10s' });
    assert.equal((await call('PUT', `/v1/kv/t/leader?acquire=${s1}`, 'a')).json(), true);
    assert.equal((await call('PUT', `/v1/session/renew/${s1}`)).status, 200);
    const [before] = (await call('GET', '/v1/kv/t/leader')).json();
    const released = await call('GET', `/v1/kv/t/leader?index=${before.ModifyIndex}&wait=5s`);
    const expiredAt = Date.now();
    assert.equal(released.json()[0].Session, undefined, 'the lock was released when the session expired');
    assert.equal((await call('PUT', `/v1/session/renew/${s1}`)).status, 404);
    assert.match((await call('PUT', `/v1/session/renew/${s1}`)).text, /Session id '.*' not found/);
    assert.deepEqual((await call('GET', `/v1/session/info/${s1}`)).json(), []);
    assert.equal((await call('PUT', `/v1/kv/t/leader?acquire=${s2}`, 'b')).json(), false, 'lock delay in effect');
    while (Date.now() - expiredAt < 450) await new Promise((r) => setTimeout(r, 50));
    assert.equal((await call('PUT', `/v1/kv/t/leader?acquire=${s2}`, 'b')).json(), true, 'after the lock delay');
  });

  test('destroy is idempotent; Behavior delete removes the held keys; bad settings are 400', async () => {
    const s = await session({ Behavior: 'delete', TTL: '10s', LockDelay: 0 });
    assert.equal((await call('PUT', `/v1/kv/d/key?acquire=${s}`, 'x')).json(), true);
    assert.equal((await call('GET', '/v1/session/list')).json().some((x: any) => x.ID === s && x.Behavior === 'delete' && x.LockDelay === 0), true);
    assert.equal((await call('PUT', `/v1/session/destroy/${s}`)).json(), true);
    assert.equal((await call('PUT', `/v1/session/destroy/${s}`)).json(), true);
    assert.equal((await call('GET', '/v1/kv/d/key')).status, 404);
    assert.equal((await call('PUT', '/v1/session/create', { TTL: '100ms' })).status, 400, 'below the minimum TTL');
    assert.equal((await call('PUT', '/v1/session/create', { Behavior: 'keep' })).status, 400);
    assert.equal((await call('PUT', '/v1/session/create', { LockDelay: '2m' })).status, 400);
    const numeric = await session({ LockDelay: 5 });
    assert.equal((await call('GET', `/v1/session/info/${numeric}`)).json()[0].LockDelay, 5e9, 'a number below 1000 means seconds');
  });
});

describe('consul stand-in transactions', () => {
  test('all or nothing: a failed check-session or cas rolls back every op with 409 and Errors', async () => {
    const s = await session({ TTL: '10s', LockDelay: '0s' });
    await call('PUT', `/v1/kv/x/leader?acquire=${s}`, 'me');
    await call('PUT', '/v1/kv/x/head', '1');
    const [head] = (await call('GET', '/v1/kv/x/head')).json();
    const b64 = (t: string): string => Buffer.from(t).toString('base64');
    const ok = await call('PUT', '/v1/txn', [
      { KV: { Verb: 'check-session', Key: 'x/leader', Session: s } },
      { KV: { Verb: 'cas', Key: 'x/head', Value: b64('2'), Index: head.ModifyIndex } },
      { KV: { Verb: 'cas', Key: 'x/versions/2', Value: b64('v2'), Index: 0 } },
    ]);
    assert.equal(ok.status, 200);
    assert.equal(ok.json().Errors, null);
    assert.equal(ok.json().Results.length, 3);
    const after = (await call('GET', '/v1/kv/x/?recurse')).json();
    assert.equal(after.find((e: any) => e.Key === 'x/head').ModifyIndex, after.find((e: any) => e.Key === 'x/versions/2').ModifyIndex, 'one index for the whole transaction');
    const stale = await call('PUT', '/v1/txn', [
      { KV: { Verb: 'cas', Key: 'x/versions/3', Value: b64('v3'), Index: 0 } },
      { KV: { Verb: 'cas', Key: 'x/head', Value: b64('3'), Index: head.ModifyIndex } },
    ]);
    assert.equal(stale.status, 409);
    assert.equal(stale.json().Errors[0].OpIndex, 1);
    assert.equal((await call('GET', '/v1/kv/x/versions/3')).status, 404, 'the first op was rolled back');
    consul.kv.expireSession(s);
    const fenced = await call('PUT', '/v1/txn', [{ KV: { Verb: 'check-session', Key: 'x/leader', Session: s } }]);
    assert.equal(fenced.status, 409);
    assert.match(fenced.json().Errors[0].What, /session/);
  });
});
