// The server's SQLite store. better-sqlite3 is used only inside this folder.
export { Store } from './store';
export { MIGRATIONS, type Migration } from './migrations';
export type { CaRow } from './ca-repository';
export { checkJoinToken, type TokenRow } from './token-repository';
export type { AdminTokenRow } from './admin-token-repository';
export type { AgentRow } from './agent-repository';
export type { CertificateRow } from './certificate-repository';
export type { PolicyRepository, StoredPolicyDocument, PolicyVersionRow, PolicyChangeRow, PolicyKey, PolicyOperation, PolicyChangeAction, NewPolicyVersion } from './policy-repository';
