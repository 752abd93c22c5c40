// Signatures over mesh policy versions: the server signs (version, digest); agents check the signer chains to their roots.

import { sign, verify, X509Certificate, type KeyObject } from 'node:crypto';
import { MeshError } from '../errors';
import { uriSans } from './certificate-info';
import { SpiffeId } from './spiffe-id';

/** What is signed: a fixed label, the version and the digest of the whole document set, one per line. */
export function policySigningPayload(version: number, digest: string): Buffer {
  return Buffer.from(`mesh-agent policy signature v1\nversion ${version}\ndigest ${digest}\n`);
}

/** Signs a version with the policy signer's key (ECDSA P-256, SHA-256, DER). Returns base64. */
export function signPolicyVersion(key: KeyObject, version: number, digest: string): string {
  return sign('sha256', policySigningPayload(version, digest), key).toString('base64');
}

/** A signed version as it arrives: what to check. */
export interface SignedPolicyVersion {
  readonly version: number;
  readonly digest: string;
  readonly signature: string;
  readonly signerCert: string;
}

const refuse = (why: string): MeshError => new MeshError('MESH_ERR_POLICY_SIGNATURE', why);

/**
 * Checks that `signed.signerCert` is a leaf issued by one of `roots` for spiffe://<trustDomain>/server/policy, valid at
 * `at` (skipped when `at` is undefined: a cached version was checked when it arrived), and that its key signed
 * (version, digest). The caller has checked that the documents hash to `digest`.
 * @throws MeshError MESH_ERR_POLICY_SIGNATURE saying which check failed
 */
export function verifyPolicySignature(signed: SignedPolicyVersion, roots: readonly string[], trustDomain: string, at?: number): void {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(signed.signerCert);
  } catch (err) {
    throw refuse(`policy version ${signed.version}: the signer certificate cannot be parsed (${(err as Error).message})`);
  }
  const expected = SpiffeId.policySigner(trustDomain).toString();
  const ids = uriSans(cert);
  if (cert.ca || ids.length !== 1 || ids[0] !== expected) {
    throw refuse(`policy version ${signed.version}: signed by ${ids.join(', ') || 'a certificate without a SPIFFE ID'}${cert.ca ? ' (a CA certificate)' : ''}, expected the policy signer ${expected}`);
  }
  const issuer = roots.map((pem) => new X509Certificate(pem)).find((root) => cert.checkIssued(root) && cert.verify(root.publicKey));
  if (!issuer) throw refuse(`policy version ${signed.version}: the signer certificate was not issued by a root of this agent's trust bundle`);
  if (at !== undefined && (at < Date.parse(cert.validFrom) || at > Date.parse(cert.validTo))) {
    throw refuse(`policy version ${signed.version}: the signer certificate is valid from ${cert.validFrom} to ${cert.validTo}, not now`);
  }
  let ok = false;
  try {
    ok = verify('sha256', policySigningPayload(signed.version, signed.digest), cert.publicKey, Buffer.from(signed.signature, 'base64'));
  } catch {
    ok = false;
  }
  if (!ok) throw refuse(`policy version ${signed.version}: the signature does not match version ${signed.version} and digest ${signed.digest}`);
}
