// The server's policy signer: a key certified by the mesh CA as spiffe://<td>/server/policy, renewed at half life.

import type { KeyObject } from 'node:crypto';
import { privateKeyFromPem, signPolicyVersion, type CertificateAuthority } from '../ca';
import type { Store } from '../store';
import { identityCurrent, serverIdentity, type ServerIdentity } from './server-identity';

/** A version's signature and the certificate that verifies it. */
export interface PolicySignature {
  readonly signature: string;
  readonly signerCert: string;
}

export class PolicySigner {
  private identity: ServerIdentity;
  private key: KeyObject;

  constructor(
    private readonly store: Store,
    private readonly ca: CertificateAuthority,
    private readonly now: () => number,
  ) {
    this.identity = serverIdentity(store, ca, 'policy-signer', now());
    this.key = privateKeyFromPem(this.identity.keyPem, 'policy signer key');
  }

  /** Signs (version, digest), first renewing the certificate when it is past half life. */
  sign(version: number, digest: string): PolicySignature {
    if (!identityCurrent(this.identity.certPem, this.ca, this.now())) {
      this.identity = serverIdentity(this.store, this.ca, 'policy-signer', this.now());
      this.key = privateKeyFromPem(this.identity.keyPem, 'policy signer key');
    }
    return { signature: signPolicyVersion(this.key, version, digest), signerCert: this.identity.certPem };
  }
}
