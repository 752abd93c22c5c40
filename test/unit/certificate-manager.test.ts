// Unit tests for the agent's CertificateManager on a fake clock: first issue, renewal at half life, backoff on failure, reuse of saved certs.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createPrivateKey } from 'node:crypto';
import { mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateManager, type Signer } from '../../src/agent/certificate-manager';
import { StateDir } from '../../src/agent/state-dir';
import { CertificateAuthority, inspectCertificate, SpiffeId, type CertificateInfo } from '../../src/ca';
import { silentLogger } from '../../src/telemetry';
import { FakeClock } from '../helpers/fake-clock';

const TD = 'mesh.local';
const NODE = SpiffeId.agent(TD, '0a1b2c3d');
const WEB = SpiffeId.workload(TD, 'default', 'web');
const WEB_REF = { name: 'web', namespace: 'default' };

const dirs: string[] = [];
const managers: CertificateManager[] = [];
after(() => {
  for (const m of managers) m.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Harness {
  readonly clock: FakeClock;
  readonly ca: CertificateAuthority;
  readonly dir: string;
  readonly state: StateDir;
  readonly mgr: CertificateManager;
  /** Every call the manager made to the signer. */
  readonly calls: { kind: 'workload' | 'node'; csr: string; service?: { name: string; namespace: string } }[];
  /** When set, the signer rejects with it. */
  failWith: Error | undefined;
  /** When set, the signer waits for it before answering. */
  gate: Promise<void> | undefined;
}

/** A manager whose signer issues with a real CA that shares the fake clock. */
function harness(opts: { lifetimeMs?: number; clock?: FakeClock; ca?: CertificateAuthority; dir?: string } = {}): Harness {
  const clock = opts.clock ?? new FakeClock();
  const ca = opts.ca ?? CertificateAuthority.create(TD, { now: clock.now });
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'mesh-certmgr-test-'));
  if (!opts.dir) dirs.push(dir);
  const state = new StateDir(dir);
  const h = { clock, ca, dir, state, calls: [], failWith: undefined, gate: undefined } as unknown as Harness & { mgr: CertificateManager };
  const signer: Signer = async (kind, csr, service) => {
    h.calls.push({ kind, csr, ...(service ? { service } : {}) });
    if (h.gate) await h.gate;
    if (h.failWith) throw h.failWith;
    const id = kind === 'node' ? NODE : SpiffeId.workload(TD, service!.namespace, service!.name);
    return ca.issue({ spiffeId: id, csrPem: csr, lifetimeMs: opts.lifetimeMs ?? 10_000 }).pem;
  };
  h.mgr = new CertificateManager(state, TD, [ca.root.pem], signer, clock, silentLogger);
  managers.push(h.mgr);
  return h;
}

/** Fires the timers due within `ms` and waits for the certificate the manager then gets. */
async function advanceAndRotate(h: Harness, ms: number): Promise<CertificateInfo> {
  const rotated = once(h.mgr, 'rotated') as Promise<[string, CertificateInfo]>;
  h.clock.advance(ms);
  return (await rotated)[1];
}

const mode = (file: string): number => statSync(file).mode & 0o777;
const serialOf = (h: Harness, id: SpiffeId): string | null => h.mgr.status().find((s) => s.identity === id.toString())!.serial;

describe('CertificateManager', () => {
  test('manage() with no saved certificate requests one at once, and contextFor appears only when it arrives', async () => {
    const h = harness();
    let open!: () => void;
    h.gate = new Promise((resolve) => (open = resolve));
    h.mgr.manage('workload', WEB, WEB_REF);
    assert.equal(h.mgr.contextFor(WEB), undefined);
    assert.equal(h.mgr.allReady(), false);
    assert.deepEqual(h.clock.pendingDueTimes(), [h.clock.now()], 'the first request is due now');

    const rotated = once(h.mgr, 'rotated') as Promise<[string, CertificateInfo]>;
    h.clock.advance(0);
    assert.equal(h.calls.length, 1);
    assert.equal(h.calls[0]!.kind, 'workload');
    assert.deepEqual(h.calls[0]!.service, WEB_REF);
    // The request is in flight: still no context.
    assert.equal(h.mgr.contextFor(WEB), undefined);
    assert.equal(h.mgr.material(WEB), undefined);

    open();
    const [identity, cert] = await rotated;
    assert.equal(identity, WEB.toString());
    assert.ok(cert.spiffeId?.equals(WEB));
    assert.ok(h.mgr.contextFor(WEB), 'a SecureContext once the certificate exists');
    assert.equal(h.mgr.allReady(), true);
    assert.equal(h.mgr.contextFor(NODE), undefined, 'no context for an identity that is not managed');
    const material = h.mgr.material(WEB)!;
    assert.equal(material.cert, cert.pem);
    assert.ok(cert.x509.checkPrivateKey(createPrivateKey(material.key)));
    assert.ok(cert.x509.verify(h.ca.root.x509.publicKey));
    // Saved to the state dir: key 0600.
    assert.equal(mode(join(h.dir, 'workloads/default.web.key')), 0o600);
    assert.equal(inspectCertificate(h.state.read('workloads/default.web.crt')!).serial, cert.serial);
  });

  test('renews at half life: not a millisecond before, and right after with a new serial, key and 0600 key file', async () => {
    const h = harness({ lifetimeMs: 10_000 });
    h.mgr.manage('node', NODE);
    const first = await advanceAndRotate(h, 0);
    assert.equal(first.notAfter.getTime() - first.notBefore.getTime(), 10_000);
    const status0 = h.mgr.status()[0]!;
    assert.equal(status0.renewAt, new Date(first.notBefore.getTime() + 5_000).toISOString());
    const keyBefore = h.state.read('node.key');
    const ctxBefore = h.mgr.contextFor(NODE);

    h.clock.advance(4_999);
    assert.equal(h.calls.length, 1, 'no request before half life');
    assert.equal(serialOf(h, NODE), first.serial);

    const second = await advanceAndRotate(h, 1);
    assert.equal(h.calls.length, 2);
    assert.notEqual(second.serial, first.serial);
    assert.equal(serialOf(h, NODE), second.serial);
    assert.equal(h.mgr.status()[0]!.renewals, status0.renewals + 1);
    assert.equal(second.notBefore.getTime(), first.notBefore.getTime() + 5_000);
    // A new key, written 0600, matching the new certificate; a new context for new connections.
    const keyAfter = h.state.read('node.key')!;
    assert.notEqual(keyAfter, keyBefore);
    assert.ok(second.x509.checkPrivateKey(createPrivateKey(keyAfter)));
    assert.equal(mode(join(h.dir, 'node.key')), 0o600);
    assert.equal(inspectCertificate(h.state.read('node.crt')!).serial, second.serial);
    assert.notEqual(h.mgr.contextFor(NODE), ctxBefore);
    // And the next renewal is at the new certificate's half life.
    assert.deepEqual(h.clock.pendingDueTimes(), [second.notBefore.getTime() + 5_000]);
  });

  test('a state dir that refuses the renewed files does not undo the renewal: it serves from memory, and says why', async () => {
    const h = harness({ lifetimeMs: 10_000 });
    h.mgr.manage('workload', WEB, WEB_REF);
    const first = await advanceAndRotate(h, 0);
    // A real write error that root cannot bypass: "workloads" is a file, so nothing can be created inside it.
    renameSync(join(h.dir, 'workloads'), join(h.dir, 'workloads.saved'));
    writeFileSync(join(h.dir, 'workloads'), '');
    const ctxBefore = h.mgr.contextFor(WEB);
    const second = await advanceAndRotate(h, 5_000);
    assert.notEqual(second.serial, first.serial);
    assert.equal(serialOf(h, WEB), second.serial, 'the renewed certificate is in use');
    assert.notEqual(h.mgr.contextFor(WEB), ctxBefore, 'new connections present it');
    assert.match(h.mgr.status()[0]!.lastError ?? '', /^MESH_ERR_STATE_DIR: cannot write .*workloads\/default\.web\.key.*ENOTDIR/);
    assert.deepEqual(h.clock.pendingDueTimes(), [second.notBefore.getTime() + 5_000], 'the next renewal at its half life, as usual');

    // The dir is writable again: the next renewal is saved, and the error clears.
    rmSync(join(h.dir, 'workloads'));
    renameSync(join(h.dir, 'workloads.saved'), join(h.dir, 'workloads'));
    const third = await advanceAndRotate(h, 5_000);
    assert.equal(inspectCertificate(h.state.read('workloads/default.web.crt')!).serial, third.serial);
    assert.equal(h.mgr.status()[0]!.lastError, null);
  });

  test('a failing signer is retried with growing backoff while the old certificate stays in use', async () => {
    const h = harness({ lifetimeMs: 3_600_000 });
    h.mgr.manage('node', NODE);
    const first = await advanceAndRotate(h, 0);
    const ctx = h.mgr.contextFor(NODE);
    const renewals = h.mgr.status()[0]!.renewals;

    h.failWith = new Error('server unreachable');
    // Half life, then three retries: full-jitter backoff from 1 s doubles (each wait in [ceiling/2, ceiling]).
    let scheduled = h.clock.nextTimerSet();
    h.clock.advance(1_800_000);
    const delays = [await scheduled];
    for (let i = 0; i < 3; i++) {
      scheduled = h.clock.nextTimerSet();
      assert.equal(h.clock.fireNext(), delays[i]);
      delays.push(await scheduled);
    }
    assert.equal(h.calls.length, 5);
    [1000, 2000, 4000, 8000].forEach((ceiling, i) => {
      assert.ok(delays[i]! >= ceiling / 2 && delays[i]! <= ceiling, `retry ${i + 1} waited ${delays[i]} ms, expected ${ceiling / 2}..${ceiling}`);
    });
    // Meanwhile the old certificate is what the proxy uses, and status says why renewal is late.
    assert.equal(h.mgr.contextFor(NODE), ctx);
    assert.equal(h.mgr.material(NODE)!.cert, first.pem);
    assert.equal(serialOf(h, NODE), first.serial);
    assert.equal(h.mgr.status()[0]!.renewals, renewals);
    assert.match(h.mgr.status()[0]!.lastError ?? '', /server unreachable/);
    assert.equal(inspectCertificate(h.state.read('node.crt')!).serial, first.serial, 'the saved certificate is untouched');

    // The server comes back: the next retry succeeds, the error clears, and backoff starts over.
    h.failWith = undefined;
    const rotated = once(h.mgr, 'rotated') as Promise<[string, CertificateInfo]>;
    h.clock.fireNext();
    const renewed = (await rotated)[1];
    assert.notEqual(renewed.serial, first.serial);
    assert.equal(h.mgr.status()[0]!.lastError, null);
    assert.equal(h.mgr.status()[0]!.renewals, renewals + 1);
    h.failWith = new Error('down again');
    scheduled = h.clock.nextTimerSet();
    h.clock.fireNext();
    const afterReset = await scheduled;
    assert.ok(afterReset >= 500 && afterReset <= 1000, `backoff was reset: waited ${afterReset} ms`);
  });

  test('retries near expiry never wait longer than a quarter of the time left', async () => {
    const h = harness({ lifetimeMs: 10_000 });
    h.mgr.manage('node', NODE);
    const cert = await advanceAndRotate(h, 0);
    h.failWith = new Error('no');
    let scheduled = h.clock.nextTimerSet();
    h.clock.advance(5_000);
    for (let i = 0; i < 8 && h.clock.now() < cert.notAfter.getTime(); i++) {
      const delay = await scheduled;
      const left = cert.notAfter.getTime() - h.clock.now();
      assert.ok(delay >= 100, `retry waited ${delay} ms`);
      if (left > 400) assert.ok(delay <= left / 4, `retry waited ${delay} ms with ${left} ms left`);
      scheduled = h.clock.nextTimerSet();
      h.clock.fireNext();
    }
    assert.ok(h.calls.length >= 6, `${h.calls.length} attempts before expiry`);
  });

  test('a saved valid certificate is reused without calling the signer, and renewed at its half life', async () => {
    const clock = new FakeClock();
    const first = harness({ clock, lifetimeMs: 10_000 });
    first.mgr.manage('workload', WEB, WEB_REF);
    const saved = await advanceAndRotate(first, 0);
    first.mgr.close();

    // A restart 2 s later: a new manager on the same state dir.
    clock.advance(2_000);
    const second = harness({ clock, ca: first.ca, dir: first.dir, lifetimeMs: 10_000 });
    second.mgr.manage('workload', WEB, WEB_REF);
    assert.ok(second.mgr.contextFor(WEB), 'usable at once');
    assert.equal(serialOf(second, WEB), saved.serial);
    assert.equal(second.mgr.material(WEB)!.cert, saved.pem);
    assert.deepEqual(clock.pendingDueTimes(), [saved.notBefore.getTime() + 5_000]);
    clock.advance(2_999);
    assert.equal(second.calls.length, 0, 'the signer is not called for a saved certificate before its half life');

    const renewed = await advanceAndRotate(second, 1);
    assert.equal(second.calls.length, 1);
    assert.notEqual(renewed.serial, saved.serial);
    assert.equal(second.mgr.status()[0]!.renewals, 1, 'one renewal since start');
  });

  test('a saved certificate past half life is used at once and renewed right away', async () => {
    const clock = new FakeClock();
    const first = harness({ clock });
    first.mgr.manage('node', NODE);
    const saved = await advanceAndRotate(first, 0);
    first.mgr.close();

    clock.advance(7_000);
    const second = harness({ clock, ca: first.ca, dir: first.dir });
    second.mgr.manage('node', NODE);
    assert.equal(serialOf(second, NODE), saved.serial);
    assert.ok(second.mgr.contextFor(NODE));
    assert.deepEqual(clock.pendingDueTimes(), [clock.now()]);
    const renewed = await advanceAndRotate(second, 0);
    assert.notEqual(renewed.serial, saved.serial);
  });

  test('a saved certificate that expired, or names another identity, is not used: a new one is requested', async () => {
    const clock = new FakeClock();
    const first = harness({ clock });
    first.mgr.manage('node', NODE);
    const saved = await advanceAndRotate(first, 0);
    first.mgr.close();

    clock.advance(10_000);
    const expired = harness({ clock, ca: first.ca, dir: first.dir });
    expired.mgr.manage('node', NODE);
    assert.equal(expired.mgr.contextFor(NODE), undefined);
    const fresh = await advanceAndRotate(expired, 0);
    assert.notEqual(fresh.serial, saved.serial);
    expired.mgr.close();

    // node.crt now holds NODE's certificate; copy it where WEB's would be.
    first.state.write('workloads/default.web.crt', first.state.read('node.crt')!);
    first.state.write('workloads/default.web.key', first.state.read('node.key')!, 0o600);
    const other = harness({ clock, ca: first.ca, dir: first.dir });
    other.mgr.manage('workload', WEB, WEB_REF);
    assert.equal(other.mgr.contextFor(WEB), undefined);
    const web = await advanceAndRotate(other, 0);
    assert.ok(web.spiffeId?.equals(WEB));
  });

  test('a certificate for the wrong identity from the server is refused and retried', async () => {
    const h = harness();
    const wrong: Signer = async (_kind, csr) => h.ca.issue({ spiffeId: SpiffeId.workload(TD, 'default', 'evil'), csrPem: csr, lifetimeMs: 10_000 }).pem;
    const mgr = new CertificateManager(h.state, TD, [h.ca.root.pem], wrong, h.clock, silentLogger);
    managers.push(mgr);
    mgr.manage('workload', WEB, WEB_REF);
    const scheduled = h.clock.nextTimerSet();
    h.clock.advance(0);
    await scheduled;
    assert.equal(mgr.contextFor(WEB), undefined);
    assert.match(mgr.status()[0]!.lastError ?? '', /MESH_ERR_CERT_INVALID.*evil/);
  });

  test('close() stops renewals', async () => {
    const h = harness();
    h.mgr.manage('node', NODE);
    await advanceAndRotate(h, 0);
    h.mgr.close();
    assert.equal(h.clock.pendingCount, 0);
    h.clock.advance(60_000);
    assert.equal(h.calls.length, 1);
  });

  test('close() during a request in flight: the answer schedules no further renewal', async () => {
    const h = harness();
    let open!: () => void;
    h.gate = new Promise((resolve) => (open = resolve));
    h.mgr.manage('node', NODE);
    h.clock.advance(0);
    assert.equal(h.calls.length, 1);
    h.mgr.close();
    open();
    // Let the signer's answer and what the manager does with it run (promise jobs only, no time passes).
    await new Promise<void>((resolve) => setImmediate(resolve));
    assert.equal(h.clock.pendingCount, 0);
    h.clock.advance(60_000);
    assert.equal(h.calls.length, 1);
  });
});
