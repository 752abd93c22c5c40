// Enrollment: a join token (checked and used up atomically) plus a CSR becomes an agent record and a node certificate.

import { randomBytes } from 'node:crypto';
import { SpiffeId, type CertificateAuthority } from '../ca';
import type { EnrollRequest, EnrollResponse } from '../protocol';
import type { Store } from '../store';

/** What enrollment needs from the server. */
export interface EnrollmentDeps {
  readonly store: Store;
  readonly ca: CertificateAuthority;
  readonly nodeCertTtlMs: number;
  readonly now: () => number;
}

/**
 * Enrolls an agent. The token use, the agent row and the certificate ledger entry land in one transaction.
 * @throws MeshError MESH_ERR_TOKEN_* for a token that is unknown, tampered, expired or used; MESH_ERR_CSR_INVALID
 */
export function enrollAgent(req: EnrollRequest, address: string, deps: EnrollmentDeps): EnrollResponse {
  const now = deps.now();
  return deps.store.tokens.consume(req.tokenId, req.tokenSecret, now, () => {
    const agentId = randomBytes(8).toString('hex');
    const cert = deps.ca.issue({ spiffeId: SpiffeId.agent(deps.ca.trustDomain, agentId), csrPem: req.csr, lifetimeMs: deps.nodeCertTtlMs });
    deps.store.agents.insert({ id: agentId, nodeName: req.nodeName, address, enrolledAt: now, joinTokenId: req.tokenId });
    deps.store.certificates.insert({
      serial: cert.serial,
      spiffeId: cert.spiffeId.toString(),
      kind: 'node',
      agentId,
      notBefore: cert.notBefore.getTime(),
      notAfter: cert.notAfter.getTime(),
      issuedAt: now,
    });
    return { agentId, trustDomain: deps.ca.trustDomain, nodeCert: cert.pem, roots: [deps.ca.root.pem] };
  });
}
