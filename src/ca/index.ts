// Identity: the certificate authority, SPIFFE IDs, keys, CSRs and join tokens. node-forge is used only inside this folder.
export { CertificateAuthority, ROOT_LIFETIME_MS, type CaMaterial, type IssuedCertificate, type IssueRequest } from './certificate-authority';
export { inspectCertificate, fingerprintOf, spiffeIdOf, uriSans, splitPemBundle, type CertificateInfo } from './certificate-info';
export { generatePrivateKey, privateKeyToPem, privateKeyFromPem } from './keys';
export { SpiffeId, checkTrustDomain, NAME_PATTERN } from './spiffe-id';
export { buildCsr, parseCsr, toPem, type ParsedCsr } from './x509';
export { formatJoinToken, parseJoinToken, newTokenCredentials, hashTokenSecret, tokenSecretMatches, type JoinToken } from './join-token';
export { policySigningPayload, signPolicyVersion, verifyPolicySignature, type SignedPolicyVersion } from './policy-signature';
