// The server's own certificates: its TLS identity on the agent port and its policy signer, kept in the store and renewed at half life.

import { createPublicKey } from 'node:crypto';
import { generatePrivateKey, inspectCertificate, privateKeyToPem, SpiffeId, type CertificateAuthority } from '../ca';
import type { Store } from '../store';

/** Both identities live a year; they are renewed once past half life. */
const SERVER_CERT_LIFETIME_MS = 365 * 86_400_000;

/** The certificate and key of one of the server's identities. */
export interface ServerIdentity {
  readonly certPem: string;
  readonly keyPem: string;
}

/** Which identity: `tls` is spiffe://<td>/server (with DNS name localhost), `policy-signer` spiffe://<td>/server/policy. */
export type ServerIdentityKind = 'tls' | 'policy-signer';

/** True while a saved certificate is before half life and was issued by the active root. */
export function identityCurrent(certPem: string, ca: CertificateAuthority, now: number): boolean {
  const info = inspectCertificate(certPem);
  const half = info.notBefore.getTime() + (info.notAfter.getTime() - info.notBefore.getTime()) / 2;
  return now < half && info.x509.checkIssued(ca.root.x509);
}

/** The saved identity of `kind`, or a new one (stored, and recorded in the certificate ledger) when it is missing or not current. */
export function serverIdentity(store: Store, ca: CertificateAuthority, kind: ServerIdentityKind, now: number): ServerIdentity {
  const saved = kind === 'tls' ? store.ca.serverIdentity() : store.ca.policySigner();
  if (saved && identityCurrent(saved.certPem, ca, now)) return saved;
  const key = generatePrivateKey();
  const spiffeId = kind === 'tls' ? SpiffeId.server(ca.trustDomain) : SpiffeId.policySigner(ca.trustDomain);
  const cert = ca.issue({ spiffeId, publicKey: createPublicKey(key), lifetimeMs: SERVER_CERT_LIFETIME_MS, ...(kind === 'tls' ? { dnsNames: ['localhost'] } : {}) });
  const keyPem = privateKeyToPem(key);
  if (kind === 'tls') store.ca.saveServerIdentity(cert.pem, keyPem);
  else store.ca.savePolicySigner(cert.pem, keyPem);
  store.certificates.insert({ serial: cert.serial, spiffeId: spiffeId.toString(), kind: 'server', agentId: null, notBefore: cert.notBefore.getTime(), notAfter: cert.notAfter.getTime(), issuedAt: now });
  return { certPem: cert.pem, keyPem };
}
