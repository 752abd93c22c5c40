// Keeps every identity of this node (node + one per local service) certified: loads saved certs, renews at half life.

import { EventEmitter } from 'node:events';
import { createPublicKey } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import { buildCsr, generatePrivateKey, inspectCertificate, privateKeyFromPem, privateKeyToPem, SpiffeId, type CertificateInfo } from '../ca';
import { describeError, isMeshError, MeshError } from '../errors';
import type { ServiceRef } from '../protocol';
import type { CredentialStore } from '../proxy';
import type { Logger } from '../telemetry';
import { Backoff, type Clock } from './clock';
import type { StateDir } from './state-dir';

/** Asks the server to sign a CSR for the node or a local service. */
export type Signer = (kind: 'workload' | 'node', csr: string, service?: ServiceRef) => Promise<string>;

interface Managed {
  readonly identity: SpiffeId;
  readonly kind: 'workload' | 'node';
  readonly service?: ServiceRef;
  readonly file: string;
  keyPem?: string;
  cert?: CertificateInfo;
  context?: SecureContext;
  timer?: { unref?(): unknown };
  readonly backoff: Backoff;
  renewals: number;
  lastError?: string;
}

/** One row of `mesh-agent status`. */
export interface CertificateStatus {
  readonly identity: string;
  readonly kind: 'workload' | 'node';
  readonly serial: string | null;
  readonly notBefore: string | null;
  readonly notAfter: string | null;
  readonly renewAt: string | null;
  readonly renewals: number;
  readonly lastError: string | null;
}

/** Events: 'rotated' (identity: string, cert: CertificateInfo). */
export class CertificateManager extends EventEmitter implements CredentialStore {
  private readonly managed = new Map<string, Managed>();
  private roots: readonly string[];
  private closed = false;

  constructor(
    private readonly state: StateDir,
    readonly trustDomain: string,
    roots: readonly string[],
    private readonly signer: Signer,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {
    super();
    this.roots = roots;
  }

  contextFor(identity: SpiffeId): SecureContext | undefined {
    return this.managed.get(identity.toString())?.context;
  }

  /** Key and certificate of an identity (the node's, for the server channel). */
  material(identity: SpiffeId): { key: string; cert: string } | undefined {
    const m = this.managed.get(identity.toString());
    return m?.keyPem && m.cert ? { key: m.keyPem, cert: m.cert.pem } : undefined;
  }

  get trustBundle(): readonly string[] {
    return this.roots;
  }

  /** Replaces the trust bundle (from the server's welcome); contexts are rebuilt so new connections use it. */
  setRoots(roots: readonly string[]): void {
    if (roots.join('') === this.roots.join('')) return;
    this.roots = roots;
    for (const m of this.managed.values()) if (m.keyPem && m.cert) m.context = this.makeContext(m.keyPem, m.cert.pem);
    try {
      this.state.write('roots.pem', roots.join(''));
    } catch (err) {
      this.log.error('cannot save the new trust bundle in the state dir; using it from memory', { error: describeError(err) });
    }
  }

  /** Starts managing an identity: reuse the saved certificate while it is before half life, else get one now. */
  manage(kind: 'workload' | 'node', identity: SpiffeId, service?: ServiceRef): void {
    const key = identity.toString();
    if (this.managed.has(key)) return;
    const file = kind === 'node' ? 'node' : `workloads/${service!.namespace}.${service!.name}`;
    const m: Managed = { identity, kind, ...(service ? { service } : {}), file, backoff: new Backoff(1000, 60_000), renewals: 0 };
    this.managed.set(key, m);
    this.loadSaved(m);
    this.schedule(m);
  }

  /** Stops managing (the service left this node). Its files stay for a later return. */
  unmanage(identity: SpiffeId): void {
    const m = this.managed.get(identity.toString());
    if (m?.timer) this.clock.clearTimeout(m.timer);
    this.managed.delete(identity.toString());
  }

  /** True when every managed identity has a certificate. */
  allReady(): boolean {
    return [...this.managed.values()].every((m) => m.context !== undefined);
  }

  status(): CertificateStatus[] {
    return [...this.managed.values()].map((m) => ({
      identity: m.identity.toString(),
      kind: m.kind,
      serial: m.cert?.serial ?? null,
      notBefore: m.cert?.notBefore.toISOString() ?? null,
      notAfter: m.cert?.notAfter.toISOString() ?? null,
      renewAt: m.cert ? new Date(renewAt(m.cert)).toISOString() : null,
      renewals: m.renewals,
      lastError: m.lastError ?? null,
    }));
  }

  /** Renews every identity whose certificate is missing or due now (after the server came back). */
  renewDue(): void {
    for (const m of this.managed.values()) if (!m.cert || this.clock.now() >= renewAt(m.cert)) this.schedule(m, 0);
  }

  close(): void {
    this.closed = true;
    for (const m of this.managed.values()) if (m.timer) this.clock.clearTimeout(m.timer);
  }

  private loadSaved(m: Managed): void {
    const keyPem = this.state.read(`${m.file}.key`);
    const certPem = this.state.read(`${m.file}.crt`);
    if (!keyPem || !certPem) return;
    try {
      const cert = inspectCertificate(certPem);
      if (!cert.spiffeId?.equals(m.identity)) throw new Error(`it names ${cert.spiffeId ?? 'no identity'}`);
      if (cert.notAfter.getTime() <= this.clock.now()) throw new Error('it has expired');
      if (!cert.x509.checkPrivateKey(privateKeyFromPem(keyPem))) throw new Error('the key does not match');
      m.keyPem = keyPem;
      m.cert = cert;
      m.context = this.makeContext(keyPem, certPem);
    } catch (err) {
      this.log.warn('saved certificate not usable, requesting a new one', { identity: m.identity.toString(), reason: (err as Error).message });
    }
  }

  private schedule(m: Managed, delayMs?: number): void {
    if (this.closed) return;
    if (m.timer) this.clock.clearTimeout(m.timer);
    const wait = delayMs ?? (m.cert ? Math.max(0, renewAt(m.cert) - this.clock.now()) : 0);
    m.timer = this.clock.setTimeout(() => void this.renew(m), wait);
    m.timer.unref?.();
  }

  private async renew(m: Managed): Promise<void> {
    if (this.closed || this.managed.get(m.identity.toString()) !== m) return;
    try {
      const key = generatePrivateKey();
      const certPem = await this.signer(m.kind, buildCsr(key, m.service?.name ?? 'node'), m.service);
      const cert = inspectCertificate(certPem);
      if (!cert.spiffeId?.equals(m.identity)) throw new MeshError('MESH_ERR_CERT_INVALID', `the server signed ${cert.spiffeId ?? 'no identity'}, expected ${m.identity}`);
      const pub = createPublicKey(key).export({ type: 'spki', format: 'der' });
      if (!cert.x509.publicKey.export({ type: 'spki', format: 'der' }).equals(pub)) throw new MeshError('MESH_ERR_CERT_INVALID', 'the signed certificate is not for our key');
      // Closed while the request was in flight: write nothing more.
      if (this.closed) return;
      const keyPem = privateKeyToPem(key);
      if (m.cert) m.renewals++;
      m.keyPem = keyPem;
      m.cert = cert;
      // New connections pick up the new context; open ones keep the one they handshook with.
      m.context = this.makeContext(keyPem, certPem);
      m.lastError = this.save(m, keyPem, certPem);
      m.backoff.reset();
      this.log.info('certificate issued', { identity: m.identity.toString(), serial: cert.serial, notAfter: cert.notAfter.toISOString() });
      this.emit('rotated', m.identity.toString(), cert);
      this.schedule(m);
    } catch (err) {
      m.lastError = describeError(err);
      const untilExpiry = m.cert ? m.cert.notAfter.getTime() - this.clock.now() : Infinity;
      const wait = Math.max(100, Math.min(m.backoff.next(), untilExpiry > 0 ? untilExpiry / 4 : 1000));
      // Before the first certificate the channel is often still opening: that is waiting, not a failure.
      const waiting = !m.cert && isMeshError(err, 'MESH_ERR_SERVER_UNREACHABLE');
      (waiting ? this.log.info : this.log.warn)(waiting ? 'waiting for the server to issue a certificate' : 'certificate request failed, will retry', { identity: m.identity.toString(), inMs: wait, error: m.lastError });
      this.schedule(m, wait);
    }
  }

  /**
   * Saves a new key and certificate. A state dir that cannot take them (full, read-only) must not undo the renewal:
   * the new pair serves from memory, and the error is logged and shown in status. Returns that error, if any.
   */
  private save(m: Managed, keyPem: string, certPem: string): string | undefined {
    try {
      this.state.writeAll([
        { name: `${m.file}.key`, content: keyPem, mode: 0o600 },
        { name: `${m.file}.crt`, content: certPem, mode: 0o644 },
      ]);
      return undefined;
    } catch (err) {
      const error = describeError(err);
      this.log.error('cannot save the renewed certificate in the state dir; serving it from memory (a restart loads the saved one, or requests a new one)', { identity: m.identity.toString(), error });
      return error;
    }
  }

  private makeContext(keyPem: string, certPem: string): SecureContext {
    return createSecureContext({ key: keyPem, cert: certPem, ca: [...this.roots], minVersion: 'TLSv1.3' });
  }
}

/** Half way through the validity period. */
function renewAt(cert: CertificateInfo): number {
  const from = cert.notBefore.getTime();
  return from + (cert.notAfter.getTime() - from) / 2;
}
