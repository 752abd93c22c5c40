// Enrollment from the agent's side: pin the CA from the join token, send a CSR, keep the node certificate.

import { createHash, X509Certificate } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import { Agent, request } from 'undici';
import { buildCsr, generatePrivateKey, privateKeyToPem, SpiffeId, type JoinToken } from '../ca';
import { MeshError, type MeshErrorCode } from '../errors';
import type { EnrollResponse } from '../protocol';

/** Checks the server proved spiffe://<td>/server (its hostname does not matter; the pinned CA does). */
export function serverIdentityCheck(trustDomain: string): (host: string, cert: PeerCertificate) => Error | undefined {
  const want = `URI:${SpiffeId.server(trustDomain)}`;
  return (_host, cert) => (cert.subjectaltname?.split(', ').includes(want) ? undefined : new MeshError('MESH_ERR_PEER_IDENTITY', `the server presented ${cert.subjectaltname ?? 'no SAN'}, expected ${want}`));
}

async function fetchJson(url: string, dispatcher: Agent, init: { method?: 'GET' | 'POST'; body?: string } = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  try {
    const res = await request(url, { method: init.method ?? 'GET', dispatcher, headers: { 'content-type': 'application/json' }, ...(init.body ? { body: init.body } : {}), headersTimeout: 10_000, bodyTimeout: 10_000 });
    const text = await res.body.text();
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      body = { error: { code: 'MESH_ERR_BAD_REQUEST', message: text.slice(0, 200) } };
    }
    return { status: res.statusCode, body };
  } catch (err) {
    throw new MeshError('MESH_ERR_SERVER_UNREACHABLE', `cannot reach the server at ${url}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}

/**
 * Enrolls with the server named in `token`.
 * @throws MeshError MESH_ERR_CA_PIN_MISMATCH, MESH_ERR_TOKEN_* (as the server said), MESH_ERR_SERVER_UNREACHABLE
 */
export async function enrollWithToken(token: JoinToken, nodeName: string): Promise<EnrollResponse & { nodeKeyPem: string; server: string }> {
  const base = `https://${token.server}`;
  // 1. Fetch the trust bundle over unverified TLS, then accept it only if it matches the pinned fingerprint.
  const insecure = new Agent({ connect: { rejectUnauthorized: false } });
  let roots: string[];
  let trustDomain: string;
  try {
    const { status, body } = await fetchJson(`${base}/v1/bundle`, insecure);
    if (status !== 200 || !Array.isArray(body.roots) || typeof body.trustDomain !== 'string') throw new MeshError('MESH_ERR_SERVER_UNREACHABLE', `${base}/v1/bundle answered ${status}: not a mesh-agent server?`);
    roots = (body.roots as string[]).filter((pem) => fingerprint(pem) === token.caFingerprint);
    trustDomain = body.trustDomain;
  } finally {
    await insecure.close();
  }
  if (roots.length === 0) {
    throw new MeshError('MESH_ERR_CA_PIN_MISMATCH', `the server at ${token.server} does not present the CA pinned in the join token (${token.caFingerprint}); refusing to enroll`);
  }
  // 2. Enroll over TLS verified against the pinned root.
  const pinned = new Agent({ connect: { ca: roots, checkServerIdentity: serverIdentityCheck(trustDomain) } });
  try {
    const key = generatePrivateKey();
    const { status, body } = await fetchJson(`${base}/v1/enroll`, pinned, {
      method: 'POST',
      body: JSON.stringify({ tokenId: token.id, tokenSecret: token.secret, nodeName, csr: buildCsr(key, nodeName) }),
    });
    if (status !== 200) {
      const e = (body.error ?? {}) as { code?: MeshErrorCode; message?: string };
      throw new MeshError(e.code ?? 'MESH_ERR_SERVER_UNREACHABLE', `enrollment refused: ${e.message ?? `status ${status}`}`);
    }
    return { ...(body as unknown as EnrollResponse), nodeKeyPem: privateKeyToPem(key), server: token.server };
  } finally {
    await pinned.close();
  }
}

function fingerprint(pem: string): string | undefined {
  try {
    return `sha256:${createHash('sha256').update(new X509Certificate(pem).raw).digest('hex')}`;
  } catch {
    return undefined;
  }
}
