// X.509 v3 certificates and PKCS#10 requests with ECDSA P-256: DER built with node-forge's ASN.1, signed by Node's crypto.

import { createHash, createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import forge from 'node-forge';
import { MeshError } from '../errors';

const { asn1 } = forge;
const U = asn1.Class.UNIVERSAL;
const T = asn1.Type;
const CTX = asn1.Class.CONTEXT_SPECIFIC;

const OID = {
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  subjectKeyId: '2.5.29.14',
  authorityKeyId: '2.5.29.35',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
};

type Asn1 = forge.asn1.Asn1;
const bin = (b: Buffer): string => b.toString('latin1');
const buf = (s: string): Buffer => Buffer.from(s, 'latin1');
const seq = (items: Asn1[]): Asn1 => asn1.create(U, T.SEQUENCE, true, items);
const oid = (o: string): Asn1 => asn1.create(U, T.OID, false, asn1.oidToDer(o).getBytes());
const der = (node: Asn1): Buffer => buf(asn1.toDer(node).getBytes());
// decodeBitStrings off: forge would otherwise re-encode BIT STRINGs it parsed, changing signed bytes.
const fromDer = (b: Buffer): Asn1 =>
  (asn1.fromDer as unknown as (b: string, o: object) => Asn1)(bin(b), { strict: true, decodeBitStrings: false });
const algorithm = (): Asn1 => seq([oid(OID.ecdsaWithSha256)]);

function name(commonName: string, organization?: string): Asn1 {
  const rdn = (o: string, v: string): Asn1 => asn1.create(U, T.SET, true, [seq([oid(o), asn1.create(U, T.UTF8, false, forge.util.encodeUtf8(v))])]);
  return seq(organization ? [rdn(OID.organization, organization), rdn(OID.commonName, commonName)] : [rdn(OID.commonName, commonName)]);
}

function time(d: Date): Asn1 {
  return d.getUTCFullYear() < 2050
    ? asn1.create(U, T.UTCTIME, false, asn1.dateToUtcTime(d))
    : asn1.create(U, T.GENERALIZEDTIME, false, asn1.dateToGeneralizedTime(d));
}

function extension(o: string, critical: boolean, value: Asn1): Asn1 {
  const parts = [oid(o)];
  if (critical) parts.push(asn1.create(U, T.BOOLEAN, false, '\xff'));
  parts.push(asn1.create(U, T.OCTETSTRING, false, asn1.toDer(value).getBytes()));
  return seq(parts);
}

/** SHA-1 of the subjectPublicKey bits, the conventional key identifier (RFC 5280 4.2.1.2). */
function keyId(spkiDer: Buffer): Buffer {
  const spki = fromDer(spkiDer).value as Asn1[];
  const bits = buf(spki[1]!.value as string).subarray(1);
  return createHash('sha1').update(bits).digest();
}

function positiveSerial(): Buffer {
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01;
  return serial;
}

/** What to put into a certificate. */
export interface CertificateTemplate {
  readonly commonName: string;
  readonly organization?: string;
  /** The subject's public key. */
  readonly publicKey: KeyObject;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly isCA: boolean;
  readonly uris?: readonly string[];
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
}

/** The signer: the issuing CA's certificate (absent when self-signing) and private key. */
export interface Issuer {
  readonly certDer?: Buffer;
  readonly key: KeyObject;
}

/** Builds and signs a certificate. Returns DER and the hex serial. */
export function buildCertificate(t: CertificateTemplate, issuer: Issuer): { der: Buffer; serial: string } {
  const spkiDer = t.publicKey.export({ type: 'spki', format: 'der' });
  const serial = positiveSerial();
  const subject = name(t.commonName, t.organization);
  let issuerName = subject;
  let authorityKeyId = keyId(spkiDer);
  if (issuer.certDer) {
    const tbs = (fromDer(issuer.certDer).value as Asn1[])[0]!.value as Asn1[];
    // tbs: [0]version, serial, sigAlg, issuer, validity, subject, spki, ...
    issuerName = tbs[5]!;
    authorityKeyId = keyId(der(tbs[6]!));
  }
  const sans: Asn1[] = [
    ...(t.uris ?? []).map((u) => asn1.create(CTX, 6, false, u)),
    ...(t.dnsNames ?? []).map((d) => asn1.create(CTX, 2, false, d)),
    ...(t.ipAddresses ?? []).map((ip) => asn1.create(CTX, 7, false, bin(ipBytes(ip)))),
  ];
  const exts: Asn1[] = [
    extension(OID.basicConstraints, true, seq(t.isCA ? [asn1.create(U, T.BOOLEAN, false, '\xff'), asn1.create(U, T.INTEGER, false, '\x00')] : [])),
    // CA: keyCertSign + cRLSign; leaf: digitalSignature (all ECDSA TLS needs).
    extension(OID.keyUsage, true, asn1.create(U, T.BITSTRING, false, t.isCA ? '\x01\x06' : '\x07\x80')),
    extension(OID.subjectKeyId, false, asn1.create(U, T.OCTETSTRING, false, bin(keyId(spkiDer)))),
    extension(OID.authorityKeyId, false, seq([asn1.create(CTX, 0, false, bin(authorityKeyId))])),
  ];
  if (!t.isCA) exts.push(extension(OID.extKeyUsage, false, seq([oid(OID.serverAuth), oid(OID.clientAuth)])));
  // Not critical: the subject is not empty (RFC 5280 4.2.1.6).
  if (sans.length > 0) exts.push(extension(OID.subjectAltName, false, seq(sans)));
  const tbs = seq([
    asn1.create(CTX, 0, true, [asn1.create(U, T.INTEGER, false, '\x02')]),
    asn1.create(U, T.INTEGER, false, bin(serial)),
    algorithm(),
    issuerName,
    seq([time(t.notBefore), time(t.notAfter)]),
    subject,
    fromDer(spkiDer),
    asn1.create(CTX, 3, true, [seq(exts)]),
  ]);
  const signature = sign('sha256', der(tbs), issuer.key);
  const cert = seq([tbs, algorithm(), asn1.create(U, T.BITSTRING, false, '\x00' + bin(signature))]);
  return { der: der(cert), serial: serial.toString('hex').toUpperCase() };
}

function ipBytes(ip: string): Buffer {
  const v4 = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(ip);
  if (v4) return Buffer.from(v4.slice(1).map(Number));
  throw new MeshError('MESH_ERR_CERT_INVALID', `only IPv4 addresses are supported in certificates, got ${ip}`);
}

/** A PKCS#10 request signed with `key`, naming `commonName`. */
export function buildCsr(key: KeyObject, commonName: string): string {
  const spkiDer = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const info = seq([asn1.create(U, T.INTEGER, false, '\x00'), name(commonName), fromDer(spkiDer), asn1.create(CTX, 0, true, [])]);
  const signature = sign('sha256', der(info), key);
  const csr = seq([info, algorithm(), asn1.create(U, T.BITSTRING, false, '\x00' + bin(signature))]);
  return toPem(der(csr), 'CERTIFICATE REQUEST');
}

/** A verified CSR: its public key and the common name it asked for. */
export interface ParsedCsr {
  readonly publicKey: KeyObject;
  readonly commonName: string;
}

/** Parses a PEM CSR and checks its self-signature. @throws MeshError MESH_ERR_CSR_INVALID */
export function parseCsr(pem: string): ParsedCsr {
  try {
    const body = fromPem(pem, 'CERTIFICATE REQUEST');
    const parts = fromDer(body).value as Asn1[];
    const info = parts[0]!;
    const infoParts = info.value as Asn1[];
    const algo = asn1.derToOid(((parts[1]!.value as Asn1[])[0]!.value as string));
    if (algo !== OID.ecdsaWithSha256) throw new Error(`signature algorithm ${algo} is not ecdsa-with-SHA256`);
    const publicKey = createPublicKey({ key: der(infoParts[2]!), format: 'der', type: 'spki' });
    if (publicKey.asymmetricKeyType !== 'ec' || publicKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw new Error('key is not ECDSA P-256');
    const signature = buf(parts[2]!.value as string).subarray(1);
    if (!verify('sha256', der(info), publicKey, signature)) throw new Error('signature does not verify');
    const cn = findCommonName(infoParts[1]!);
    return { publicKey, commonName: cn };
  } catch (err) {
    if (err instanceof MeshError) throw err;
    throw new MeshError('MESH_ERR_CSR_INVALID', `bad certificate signing request: ${(err as Error).message}`, { cause: err });
  }
}

function findCommonName(nameNode: Asn1): string {
  for (const rdn of nameNode.value as Asn1[]) {
    for (const atv of rdn.value as Asn1[]) {
      const [o, v] = atv.value as Asn1[];
      if (asn1.derToOid(o!.value as string) === OID.commonName) return forge.util.decodeUtf8(v!.value as string);
    }
  }
  return '';
}

/** PEM armour around DER. */
export function toPem(body: Buffer, label: string): string {
  const b64 = body.toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN ${label}-----\n${b64}-----END ${label}-----\n`;
}

/** The DER inside the first PEM block with `label`. @throws Error when there is none. */
export function fromPem(pem: string, label: string): Buffer {
  const m = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`).exec(pem);
  if (!m) throw new Error(`no "${label}" PEM block found`);
  return Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
}
