// The mesh certificate authority: a self-signed ECDSA root that signs node, server and workload certificates.

import { createPublicKey, type KeyObject } from 'node:crypto';
import { MeshError } from '../errors';
import { inspectCertificate, type CertificateInfo } from './certificate-info';
import { generatePrivateKey, privateKeyFromPem, privateKeyToPem } from './keys';
import { SpiffeId, checkTrustDomain } from './spiffe-id';
import { buildCertificate, parseCsr, toPem } from './x509';

/** The CA's persistent material, as stored by the server (the key never leaves the server). */
export interface CaMaterial {
  readonly trustDomain: string;
  readonly certPem: string;
  readonly keyPem: string;
}

/** A certificate the CA issued. */
export interface IssuedCertificate extends CertificateInfo {
  readonly spiffeId: SpiffeId;
}

/** What to issue: an identity, a public key (or a CSR carrying one) and a lifetime. */
export interface IssueRequest {
  readonly spiffeId: SpiffeId;
  readonly publicKey?: KeyObject;
  readonly csrPem?: string;
  readonly lifetimeMs: number;
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
}

/** @default 10 years */
export const ROOT_LIFETIME_MS = 10 * 365 * 86_400_000;

export class CertificateAuthority {
  readonly root: CertificateInfo;
  private readonly key: KeyObject;
  private readonly rootDer: Buffer;

  private constructor(readonly material: CaMaterial, private readonly now: () => number) {
    this.root = inspectCertificate(material.certPem);
    this.key = privateKeyFromPem(material.keyPem, 'CA key');
    this.rootDer = this.root.x509.raw;
    if (!this.root.x509.checkPrivateKey(this.key)) throw new MeshError('MESH_ERR_CERT_INVALID', 'the CA key does not match the CA certificate');
  }

  /** Creates a new root for `trustDomain`. */
  static create(trustDomain: string, opts: { now?: () => number; lifetimeMs?: number } = {}): CertificateAuthority {
    checkTrustDomain(trustDomain);
    const now = opts.now ?? Date.now;
    const key = generatePrivateKey();
    const notBefore = new Date(Math.floor(now() / 1000) * 1000);
    const { der } = buildCertificate(
      {
        commonName: `mesh-agent root CA (${trustDomain})`,
        organization: 'mesh-agent',
        publicKey: createPublicKey(key),
        notBefore,
        notAfter: new Date(notBefore.getTime() + (opts.lifetimeMs ?? ROOT_LIFETIME_MS)),
        isCA: true,
        uris: [`spiffe://${trustDomain}`],
      },
      { key },
    );
    return new CertificateAuthority({ trustDomain, certPem: toPem(der, 'CERTIFICATE'), keyPem: privateKeyToPem(key) }, now);
  }

  /** Opens stored CA material. @throws MeshError MESH_ERR_CERT_INVALID */
  static load(material: CaMaterial, opts: { now?: () => number } = {}): CertificateAuthority {
    return new CertificateAuthority(material, opts.now ?? Date.now);
  }

  get trustDomain(): string {
    return this.material.trustDomain;
  }

  /** `sha256:<hex>` of the root, the value join tokens pin. */
  get fingerprint(): string {
    return this.root.fingerprint;
  }

  /** Signs a leaf certificate for `req.spiffeId`. @throws MeshError MESH_ERR_CSR_INVALID for a bad CSR */
  issue(req: IssueRequest): IssuedCertificate {
    if (req.spiffeId.trustDomain !== this.trustDomain) {
      throw new MeshError('MESH_ERR_CSR_INVALID', `identity ${req.spiffeId} is outside this CA's trust domain ${this.trustDomain}`);
    }
    const publicKey = req.publicKey ?? (req.csrPem !== undefined ? parseCsr(req.csrPem).publicKey : undefined);
    if (!publicKey) throw new MeshError('MESH_ERR_CSR_INVALID', 'an issue request needs a public key or a CSR');
    const notBefore = new Date(Math.floor(this.now() / 1000) * 1000);
    const notAfter = new Date(notBefore.getTime() + Math.ceil(req.lifetimeMs / 1000) * 1000);
    const { der } = buildCertificate(
      {
        commonName: req.spiffeId.workloadParts?.service ?? req.spiffeId.path.split('/').pop() ?? 'mesh',
        publicKey,
        notBefore,
        notAfter,
        isCA: false,
        uris: [req.spiffeId.toString()],
        ...(req.dnsNames ? { dnsNames: req.dnsNames } : {}),
        ...(req.ipAddresses ? { ipAddresses: req.ipAddresses } : {}),
      },
      { certDer: this.rootDer, key: this.key },
    );
    const info = inspectCertificate(toPem(der, 'CERTIFICATE'));
    return { ...info, spiffeId: req.spiffeId };
  }
}
