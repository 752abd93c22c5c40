// Unit tests for src/ca: the root CA, issued leaves (checked by Node and by openssl), CSRs, SPIFFE IDs and join tokens.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  buildCsr,
  CertificateAuthority,
  formatJoinToken,
  generatePrivateKey,
  hashTokenSecret,
  newTokenCredentials,
  parseCsr,
  parseJoinToken,
  privateKeyToPem,
  SpiffeId,
  tokenSecretMatches,
  uriSans,
  type JoinToken,
} from '../../src/ca';
import { isMeshError, type MeshErrorCode } from '../../src/errors';

const TD = 'mesh.local';
const WEB = SpiffeId.parse('spiffe://mesh.local/ns/default/sa/web');
// A whole second, so notBefore (which the CA floors to seconds) equals it exactly.
const T0 = Date.UTC(2030, 5, 1, 12, 0, 0);

const tmp = mkdtempSync(join(tmpdir(), 'mesh-ca-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Asserts `fn` throws a MeshError with `code` whose message matches `re`. */
function throwsMesh(fn: () => unknown, code: MeshErrorCode, re?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isMeshError(err), `expected a MeshError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (re) assert.match(err.message, re);
    return true;
  });
}

const spki = (k: KeyObject): Buffer => createPublicKey(k).export({ type: 'spki', format: 'der' });

let fileNo = 0;
function writeTmp(content: string, ext = 'pem'): string {
  const file = join(tmp, `f${fileNo++}.${ext}`);
  writeFileSync(file, content);
  return file;
}

function openssl(args: string[]): { status: number | null; out: string } {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  assert.equal(r.error, undefined, `cannot run openssl: ${r.error?.message}`);
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('CertificateAuthority', () => {
  const ca = CertificateAuthority.create(TD, { now: () => T0 });

  test('create makes a self-signed CA root for the trust domain', () => {
    const root = ca.root.x509;
    assert.equal(ca.trustDomain, TD);
    assert.equal(root.ca, true);
    assert.equal(root.subject, root.issuer);
    assert.ok(root.verify(root.publicKey), 'root is self-signed');
    assert.ok(root.checkIssued(root));
    assert.deepEqual(uriSans(root), ['spiffe://mesh.local']);
    assert.equal(ca.root.notBefore.getTime(), T0);
    assert.match(ca.fingerprint, /^sha256:[0-9a-f]{64}$/);
    assert.equal(ca.fingerprint, `sha256:${createHash('sha256').update(root.raw).digest('hex')}`);
    // The key in the material is the root's key.
    assert.ok(root.checkPrivateKey(createPrivateKey(ca.material.keyPem)));
  });

  test('create refuses a bad trust domain', () => {
    throwsMesh(() => CertificateAuthority.create('UPPER'), 'MESH_ERR_SPIFFE_ID', /trust domain/);
    throwsMesh(() => CertificateAuthority.create('a/b'), 'MESH_ERR_SPIFFE_ID');
  });

  test('two CAs have different roots and keys', () => {
    const other = CertificateAuthority.create(TD, { now: () => T0 });
    assert.notEqual(other.fingerprint, ca.fingerprint);
    assert.notEqual(other.material.keyPem, ca.material.keyPem);
  });

  test('load reopens stored material: same root, and leaves it issues verify against the original root', () => {
    const loaded = CertificateAuthority.load({ ...ca.material }, { now: () => T0 });
    assert.equal(loaded.fingerprint, ca.fingerprint);
    assert.equal(loaded.trustDomain, TD);
    const leaf = loaded.issue({ spiffeId: WEB, publicKey: createPublicKey(generatePrivateKey()), lifetimeMs: 60_000 });
    assert.ok(leaf.x509.verify(ca.root.x509.publicKey));
    assert.ok(leaf.x509.checkIssued(ca.root.x509));
  });

  test('load refuses a key that does not belong to the root', () => {
    const material = { ...ca.material, keyPem: privateKeyToPem(generatePrivateKey()) };
    throwsMesh(() => CertificateAuthority.load(material), 'MESH_ERR_CERT_INVALID', /does not match/);
  });

  test('load refuses a certificate that is not PEM', () => {
    throwsMesh(() => CertificateAuthority.load({ ...ca.material, certPem: 'not a certificate' }), 'MESH_ERR_CERT_INVALID');
  });

  // BUG (src/ca/certificate-authority.ts:42): createPrivateKey(material.keyPem) throws a plain OpenSSL
  // error (ERR_OSSL_UNSUPPORTED) for an unreadable key, not the documented MeshError MESH_ERR_CERT_INVALID.
  test('load refuses a key that is not PEM with MESH_ERR_CERT_INVALID', () => {
    throwsMesh(() => CertificateAuthority.load({ ...ca.material, keyPem: 'garbage' }), 'MESH_ERR_CERT_INVALID');
  });

  test('an issued leaf verifies against the root with Node (verify, checkIssued) and not against another root', () => {
    const leaf = ca.issue({ spiffeId: WEB, publicKey: createPublicKey(generatePrivateKey()), lifetimeMs: 86_400_000 });
    assert.ok(leaf.x509.verify(ca.root.x509.publicKey));
    assert.ok(leaf.x509.checkIssued(ca.root.x509));
    assert.equal(leaf.x509.issuer, ca.root.x509.subject);
    const stranger = CertificateAuthority.create(TD, { now: () => T0 });
    assert.equal(leaf.x509.verify(stranger.root.x509.publicKey), false);
    assert.equal(leaf.x509.checkIssued(stranger.root.x509), false);
  });

  test('openssl verify accepts a leaf with its root (strict, for TLS client and server) and rejects it with another root', () => {
    // Real time here: openssl checks validity against the wall clock.
    const live = CertificateAuthority.create(TD);
    const key = generatePrivateKey();
    const leaf = live.issue({ spiffeId: WEB, csrPem: buildCsr(key, 'web'), lifetimeMs: 86_400_000 });
    const rootFile = writeTmp(live.root.pem);
    const leafFile = writeTmp(leaf.pem);
    for (const purpose of ['sslclient', 'sslserver']) {
      const r = openssl(['verify', '-x509_strict', '-purpose', purpose, '-CAfile', rootFile, leafFile]);
      assert.equal(r.status, 0, r.out);
      assert.match(r.out, /: OK/);
    }
    const strangerFile = writeTmp(CertificateAuthority.create(TD).root.pem);
    const bad = openssl(['verify', '-CAfile', strangerFile, leafFile]);
    assert.notEqual(bad.status, 0, bad.out);
  });

  test('the leaf carries exactly one URI SAN, the SPIFFE ID, and nothing else unless asked', () => {
    const leaf = ca.issue({ spiffeId: WEB, publicKey: createPublicKey(generatePrivateKey()), lifetimeMs: 10_000 });
    assert.deepEqual(uriSans(leaf.x509), [WEB.toString()]);
    assert.equal(leaf.x509.subjectAltName, `URI:${WEB}`);
    assert.ok(leaf.spiffeId.equals(WEB));
    assert.match(leaf.x509.subject, /CN=web/);

    const server = ca.issue({ spiffeId: SpiffeId.server(TD), publicKey: createPublicKey(generatePrivateKey()), lifetimeMs: 10_000, dnsNames: ['mesh-server'], ipAddresses: ['127.0.0.1'] });
    assert.deepEqual(uriSans(server.x509), ['spiffe://mesh.local/server']);
    assert.ok(server.x509.checkHost('mesh-server'));
    assert.ok(server.x509.checkIP('127.0.0.1'));
  });

  for (const [label, lifetimeMs] of [['10 s', 10_000], ['24 h', 86_400_000]] as const) {
    test(`notAfter - notBefore equals the lifetime (${label}), starting at now`, () => {
      const leaf = ca.issue({ spiffeId: WEB, publicKey: createPublicKey(generatePrivateKey()), lifetimeMs });
      assert.equal(leaf.notBefore.getTime(), T0);
      assert.equal(leaf.notAfter.getTime() - leaf.notBefore.getTime(), lifetimeMs);
      // What Node reads from the DER agrees.
      assert.equal(new Date(leaf.x509.validTo).getTime() - new Date(leaf.x509.validFrom).getTime(), lifetimeMs);
    });
  }

  test('the leaf is not a CA and may only sign (critical keyUsage digitalSignature, EKU client+server auth)', () => {
    const leaf = ca.issue({ spiffeId: WEB, publicKey: createPublicKey(generatePrivateKey()), lifetimeMs: 10_000 });
    assert.equal(leaf.x509.ca, false);
    assert.deepEqual([...(leaf.x509.keyUsage ?? [])].sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    const r = openssl(['x509', '-in', writeTmp(leaf.pem), '-noout', '-ext', 'keyUsage,basicConstraints']);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /Basic Constraints: critical\s+CA:FALSE/);
    assert.match(r.out, /Key Usage: critical\s+Digital Signature\s*$/m);
    assert.doesNotMatch(r.out, /Certificate Sign|Key Encipherment/);
  });

  test('each issue gets a new serial', () => {
    const pub = createPublicKey(generatePrivateKey());
    const a = ca.issue({ spiffeId: WEB, publicKey: pub, lifetimeMs: 10_000 });
    const b = ca.issue({ spiffeId: WEB, publicKey: pub, lifetimeMs: 10_000 });
    assert.notEqual(a.serial, b.serial);
    assert.match(a.serial, /^[0-9A-F]+$/);
  });

  test('issue from a CSR certifies the CSR key', () => {
    const key = generatePrivateKey();
    const leaf = ca.issue({ spiffeId: WEB, csrPem: buildCsr(key, 'web'), lifetimeMs: 10_000 });
    assert.ok(leaf.x509.publicKey.export({ type: 'spki', format: 'der' }).equals(spki(key)));
    assert.ok(leaf.x509.checkPrivateKey(key));
  });

  test('issuing outside the trust domain is refused', () => {
    const pub = createPublicKey(generatePrivateKey());
    throwsMesh(
      () => ca.issue({ spiffeId: SpiffeId.parse('spiffe://other.local/ns/default/sa/web'), publicKey: pub, lifetimeMs: 10_000 }),
      'MESH_ERR_CSR_INVALID',
      /outside this CA's trust domain mesh\.local/,
    );
  });

  test('issuing with neither a key nor a CSR is refused', () => {
    throwsMesh(() => ca.issue({ spiffeId: WEB, lifetimeMs: 10_000 }), 'MESH_ERR_CSR_INVALID', /public key or a CSR/);
  });

  test('issuing from a CSR with a corrupted signature is refused', () => {
    const csr = corruptSignature(buildCsr(generatePrivateKey(), 'web'));
    throwsMesh(() => ca.issue({ spiffeId: WEB, csrPem: csr, lifetimeMs: 10_000 }), 'MESH_ERR_CSR_INVALID');
  });
});

/** Re-armours DER after `edit`. */
function editDer(pem: string, label: string, edit: (der: Buffer) => void): string {
  const body = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  const der = Buffer.from(body, 'base64');
  edit(der);
  return `-----BEGIN ${label}-----\n${der.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END ${label}-----\n`;
}

/** Flips a bit in the last byte of the DER: the tail of the ECDSA signature's s value. */
function corruptSignature(csrPem: string): string {
  return editDer(csrPem, 'CERTIFICATE REQUEST', (der) => {
    der[der.length - 1] ^= 0x01;
  });
}

describe('CSR', () => {
  test('a CSR built by buildCsr parses with parseCsr: same key, same common name; openssl agrees it is signed', () => {
    const key = generatePrivateKey();
    const csr = buildCsr(key, 'billing-api');
    assert.match(csr, /^-----BEGIN CERTIFICATE REQUEST-----\n/);
    const parsed = parseCsr(csr);
    assert.equal(parsed.commonName, 'billing-api');
    assert.ok(parsed.publicKey.export({ type: 'spki', format: 'der' }).equals(spki(key)));
    const r = openssl(['req', '-in', writeTmp(csr), '-noout', '-verify']);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /verify OK/);
  });

  test('a CSR with a corrupted signature is refused', () => {
    throwsMesh(() => parseCsr(corruptSignature(buildCsr(generatePrivateKey(), 'web'))), 'MESH_ERR_CSR_INVALID', /bad certificate signing request/);
  });

  test('a CSR whose signed body was altered (CN changed) is refused: the signature no longer matches', () => {
    const csr = buildCsr(generatePrivateKey(), 'web');
    const altered = editDer(csr, 'CERTIFICATE REQUEST', (der) => {
      const at = der.indexOf('web', 0, 'latin1');
      assert.ok(at > 0);
      der[at + 2] = 'x'.charCodeAt(0);
    });
    throwsMesh(() => parseCsr(altered), 'MESH_ERR_CSR_INVALID', /signature does not verify/);
  });

  test('a CSR PEM that is garbage is refused', () => {
    throwsMesh(() => parseCsr('garbage'), 'MESH_ERR_CSR_INVALID', /no "CERTIFICATE REQUEST" PEM block/);
    throwsMesh(() => parseCsr('-----BEGIN CERTIFICATE REQUEST-----\nAAAAAAAA\n-----END CERTIFICATE REQUEST-----\n'), 'MESH_ERR_CSR_INVALID');
    throwsMesh(() => parseCsr(''), 'MESH_ERR_CSR_INVALID');
  });

  test('a CSR for an RSA key (made by openssl) is refused', () => {
    const keyFile = join(tmp, 'rsa.key');
    const csrFile = join(tmp, 'rsa.csr');
    const r = openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=web', '-keyout', keyFile, '-out', csrFile]);
    assert.equal(r.status, 0, r.out);
    const pem = readFileSync(csrFile, 'utf8');
    throwsMesh(() => parseCsr(pem), 'MESH_ERR_CSR_INVALID', /not ecdsa-with-SHA256/);
  });
});

describe('SpiffeId', () => {
  test('parse accepts well-formed IDs and keeps trust domain and path', () => {
    const id = SpiffeId.parse('spiffe://mesh.local/ns/default/sa/web');
    assert.equal(id.trustDomain, 'mesh.local');
    assert.equal(id.path, '/ns/default/sa/web');
    assert.equal(id.toString(), 'spiffe://mesh.local/ns/default/sa/web');
    assert.equal(SpiffeId.parse('spiffe://mesh.local').path, '');
    assert.equal(SpiffeId.parse('spiffe://td-1.example_x/a.b/C_d-e').path, '/a.b/C_d-e');
  });

  for (const bad of [
    'http://x',
    'spiffe://UPPER/x',
    'spiffe://td/a/../b',
    'spiffe://td/a/./b',
    'spiffe://td/a/',
    'spiffe://td/',
    'spiffe://td//a',
    'spiffe://td:8443/a',
    'spiffe://user@td/a',
    'spiffe://td/a?b=1',
    'spiffe://td/a#frag',
    'spiffe:///a',
    'SPIFFE://td/a',
    ' spiffe://td/a',
    '',
  ]) {
    test(`parse refuses ${JSON.stringify(bad)}`, () => {
      throwsMesh(() => SpiffeId.parse(bad), 'MESH_ERR_SPIFFE_ID');
    });
  }

  test('the error names the offending value', () => {
    throwsMesh(() => SpiffeId.parse('http://x'), 'MESH_ERR_SPIFFE_ID', /"http:\/\/x"/);
    throwsMesh(() => SpiffeId.parse('spiffe://td/a/../b'), 'MESH_ERR_SPIFFE_ID', /bad path/);
  });

  test('workloadParts reads /ns/<ns>/sa/<sa> and nothing else', () => {
    assert.deepEqual(SpiffeId.parse('spiffe://mesh.local/ns/default/sa/web').workloadParts, { namespace: 'default', service: 'web' });
    assert.deepEqual(SpiffeId.workload(TD, 'prod', 'billing-api').workloadParts, { namespace: 'prod', service: 'billing-api' });
    assert.equal(SpiffeId.workload(TD, 'prod', 'api').toString(), 'spiffe://mesh.local/ns/prod/sa/api');
    for (const s of ['spiffe://td/ns/default', 'spiffe://td/ns/default/sa/web/extra', 'spiffe://td/agent/abc', 'spiffe://td', 'spiffe://td/x/ns/a/sa/b']) {
      assert.equal(SpiffeId.parse(s).workloadParts, undefined, s);
    }
  });

  test('agentId reads /agent/<id> and nothing else', () => {
    assert.equal(SpiffeId.agent(TD, '0123abcd').agentId, '0123abcd');
    assert.equal(SpiffeId.agent(TD, '0123abcd').toString(), 'spiffe://mesh.local/agent/0123abcd');
    assert.equal(SpiffeId.parse('spiffe://td/agent/a/b').agentId, undefined);
    assert.equal(SpiffeId.parse('spiffe://td/ns/default/sa/web').agentId, undefined);
    assert.equal(SpiffeId.server(TD).toString(), 'spiffe://mesh.local/server');
  });

  test('equals compares trust domain and path', () => {
    assert.ok(SpiffeId.parse('spiffe://a/x').equals(SpiffeId.parse('spiffe://a/x')));
    assert.ok(!SpiffeId.parse('spiffe://a/x').equals(SpiffeId.parse('spiffe://b/x')));
    assert.ok(!SpiffeId.parse('spiffe://a/x').equals(SpiffeId.parse('spiffe://a/y')));
  });

  test('workload/agent constructors refuse parts that would make a bad ID', () => {
    throwsMesh(() => SpiffeId.workload(TD, 'default', 'a/../b'), 'MESH_ERR_SPIFFE_ID');
    throwsMesh(() => SpiffeId.agent('Bad', 'x'), 'MESH_ERR_SPIFFE_ID');
  });
});

describe('join tokens', () => {
  const token: JoinToken = {
    server: '10.0.0.5:15010',
    caFingerprint: `sha256:${'ab'.repeat(32)}`,
    ...newTokenCredentials(),
  };

  test('newTokenCredentials: 8 hex id, 32-char base64url secret, different each time', () => {
    const a = newTokenCredentials();
    const b = newTokenCredentials();
    assert.match(a.id, /^[0-9a-f]{8}$/);
    assert.match(a.secret, /^[A-Za-z0-9_-]{32}$/);
    assert.notEqual(a.secret, b.secret);
  });

  test('formatJoinToken / parseJoinToken round trip (surrounding whitespace from copying is ignored)', () => {
    const text = formatJoinToken(token);
    assert.match(text, /^meshjoin1_[A-Za-z0-9_-]+\.[0-9a-f]{8}$/);
    assert.deepEqual(parseJoinToken(text), token);
    assert.deepEqual(parseJoinToken(`  ${text}\n`), token);
  });

  test('a flipped character anywhere after the prefix is caught by the checksum', () => {
    const text = formatJoinToken(token);
    const dot = text.lastIndexOf('.');
    // One position in the body, one at its end, one in the checksum.
    for (const i of [12, dot - 1, text.length - 1]) {
      const c = text[i]!;
      const flipped = `${text.slice(0, i)}${c === 'a' ? 'b' : 'a'}${text.slice(i + 1)}`;
      throwsMesh(() => parseJoinToken(flipped), 'MESH_ERR_TOKEN_MALFORMED', /checksum/);
    }
  });

  test('a wrong prefix is malformed and says what is expected', () => {
    const text = formatJoinToken(token);
    throwsMesh(() => parseJoinToken(text.replace('meshjoin1_', 'meshjoin2_')), 'MESH_ERR_TOKEN_MALFORMED', /must start with "meshjoin1_"/);
    throwsMesh(() => parseJoinToken(''), 'MESH_ERR_TOKEN_MALFORMED');
  });

  test('structure and content problems are malformed too', () => {
    throwsMesh(() => parseJoinToken('meshjoin1_abc'), 'MESH_ERR_TOKEN_MALFORMED', /<body>\.<checksum>/);
    throwsMesh(() => parseJoinToken('meshjoin1_a.b.c'), 'MESH_ERR_TOKEN_MALFORMED');
    // A correct checksum over a body that is missing fields.
    const body = Buffer.from(JSON.stringify({ s: token.server, f: 'md5:x', i: token.id, k: token.secret })).toString('base64url');
    const sum = createHash('sha256').update(body).digest('hex').slice(0, 8);
    throwsMesh(() => parseJoinToken(`meshjoin1_${body}.${sum}`), 'MESH_ERR_TOKEN_MALFORMED', /CA fingerprint/);
  });

  test('hashTokenSecret is SHA-256 hex and tokenSecretMatches checks against it', () => {
    const h = hashTokenSecret(token.secret);
    assert.equal(h, createHash('sha256').update(token.secret).digest('hex'));
    assert.ok(!h.includes(token.secret));
    assert.ok(tokenSecretMatches(token.secret, h));
    assert.ok(!tokenSecretMatches(`${token.secret}x`, h));
    assert.ok(!tokenSecretMatches(token.secret, hashTokenSecret('other')));
    assert.ok(!tokenSecretMatches(token.secret, 'not-hex'));
    assert.ok(!tokenSecretMatches(token.secret, ''));
  });
});
