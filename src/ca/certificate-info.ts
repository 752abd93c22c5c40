// What the mesh reads from a certificate: its SPIFFE ID, serial, validity and fingerprint.

import { X509Certificate } from 'node:crypto';
import { MeshError } from '../errors';
import { SpiffeId } from './spiffe-id';

/** The parts of a certificate the mesh acts on. */
export interface CertificateInfo {
  readonly pem: string;
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** `sha256:<hex>` of the DER. */
  readonly fingerprint: string;
  /** The URI SAN as a SPIFFE ID, when the certificate has exactly one. */
  readonly spiffeId: SpiffeId | undefined;
  readonly x509: X509Certificate;
}

/** `sha256:<lower-case hex>` of a certificate's DER encoding, as pinned in join tokens. */
export function fingerprintOf(x509: X509Certificate): string {
  return `sha256:${x509.fingerprint256.replace(/:/g, '').toLowerCase()}`;
}

/** URI SANs of a certificate. */
export function uriSans(x509: X509Certificate): string[] {
  return (x509.subjectAltName ?? '')
    .split(/,\s*/)
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4));
}

/** A certificate's SPIFFE ID: its URI SAN when it has exactly one and it parses, else undefined. */
export function spiffeIdOf(x509: X509Certificate): SpiffeId | undefined {
  const uris = uriSans(x509);
  if (uris.length !== 1) return undefined;
  try {
    return SpiffeId.parse(uris[0]!);
  } catch {
    return undefined;
  }
}

/** Parses a PEM certificate. @throws MeshError MESH_ERR_CERT_INVALID */
export function inspectCertificate(pem: string): CertificateInfo {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(pem);
  } catch (err) {
    throw new MeshError('MESH_ERR_CERT_INVALID', `cannot parse certificate: ${(err as Error).message}`, { cause: err });
  }
  return {
    pem,
    serial: x509.serialNumber.toUpperCase(),
    notBefore: new Date(x509.validFrom),
    notAfter: new Date(x509.validTo),
    fingerprint: fingerprintOf(x509),
    spiffeId: spiffeIdOf(x509),
    x509,
  };
}

/** Splits a PEM bundle into its certificates' PEM blocks. */
export function splitPemBundle(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g)?.map((s) => (s.endsWith('\n') ? s : `${s}\n`)) ?? [];
}
