// Where HA mode keeps the mesh's state in Consul KV, and the shape of each record (documented in docs/ha.md).

import type { CaRow, TokenRow } from '../../store';
import type { SealedSecret } from './key-envelope';

/** The keys under a prefix (which ends in "/"). */
export function kvKeys(prefix: string): {
  leader: string;
  ca: string;
  adminToken: string;
  head: string;
  version: (n: number) => string;
  tokens: string;
  token: (id: string) => string;
  agents: string;
  agent: (id: string) => string;
  replicas: string;
  replica: (name: string) => string;
} {
  return {
    leader: `${prefix}leader`,
    ca: `${prefix}ca`,
    adminToken: `${prefix}admin-token`,
    head: `${prefix}policy/head`,
    // Zero-padded so a recursive read lists versions in order.
    version: (n) => `${prefix}policy/versions/${String(n).padStart(10, '0')}`,
    tokens: `${prefix}tokens/`,
    token: (id) => `${prefix}tokens/${id}`,
    agents: `${prefix}agents/`,
    agent: (id) => `${prefix}agents/${id}`,
    replicas: `${prefix}replicas/`,
    replica: (name) => `${prefix}replicas/${name}`,
  };
}

/** `<prefix>ca`: the root in clear, its private key sealed (aad: the fingerprint). */
export interface KvCaRecord extends Omit<CaRow, 'keyPem'> {
  readonly key: SealedSecret;
}

/** `<prefix>policy/head`: the newest committed version. */
export interface KvHeadRecord {
  readonly version: number;
}

/** `<prefix>tokens/<id>`: a join token; only the hash of its secret. */
export type KvTokenRecord = TokenRow;

/** `<prefix>agents/<id>`: an enrolled agent and what it last reported in its hello. */
export interface KvAgentRecord {
  readonly id: string;
  readonly nodeName: string;
  readonly address: string;
  readonly enrolledAt: number;
  readonly joinTokenId: string | null;
  readonly services?: readonly string[];
  readonly serviceLabels?: Readonly<Record<string, Readonly<Record<string, string>>>>;
  readonly upstreams?: readonly string[];
}

/** `<prefix>replicas/<name>`: a replica, locked by its session while it lives. */
export interface KvReplicaRecord {
  readonly name: string;
  readonly admin: string;
  readonly agent: string;
  readonly appliedVersion: number;
  readonly updatedAt: number;
}

/** Consul's default kv_max_value_size. */
export const KV_MAX_VALUE_BYTES = 512 * 1024;
