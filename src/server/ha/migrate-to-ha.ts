// `mesh-agent migrate-to-ha`: copies a single server's SQLite state (CA, admin token, policy history, join tokens, agents) into Consul KV.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MeshError } from '../../errors';
import { resolveConsulSettings } from '../../registry';
import { Store, type NewPolicyVersion } from '../../store';
import type { ServerConfig } from '../server-config';
import { ConsulApi } from './consul-api';
import { readKeyEncryptionKey, seal } from './key-envelope';
import { kvKeys, type KvAgentRecord, type KvCaRecord, type KvHeadRecord } from './kv-layout';

/** What was copied. */
export interface MigrationReport {
  readonly prefix: string;
  readonly caFingerprint: string;
  readonly policyVersion: number;
  readonly tokens: number;
  readonly agents: number;
}

/**
 * Copies the state of `config.dataDir` (stop that server first) to Consul KV under `config.ha.prefix`, which must
 * hold no mesh state yet. Every key is written create-only; the policy head goes last, so replicas started
 * meanwhile see either nothing or everything. Afterwards start replicas with `--ha consul` (this data dir may be one).
 * @throws MeshError MESH_ERR_CONFIG (no HA settings, no state, prefix in use) | MESH_ERR_HA_KEY | MESH_ERR_CONSUL | MESH_ERR_STORE
 */
export async function migrateToHa(config: ServerConfig): Promise<MigrationReport> {
  const ha = config.ha;
  if (!ha) throw new MeshError('MESH_ERR_CONFIG', 'migrate-to-ha needs the HA settings: --ha-key-file and the Consul address (--ha-consul or CONSUL_HTTP_ADDR)');
  const file = join(config.dataDir, 'mesh.db');
  if (!existsSync(file)) throw new MeshError('MESH_ERR_CONFIG', `there is no server state to migrate: ${file} does not exist`);
  const kek = readKeyEncryptionKey(ha.keyFile);
  const api = new ConsulApi(resolveConsulSettings(ha.consul));
  const store = Store.open(file);
  const keys = kvKeys(ha.prefix);
  try {
    for (const k of [keys.ca, keys.head]) {
      if ((await api.get(k)).entry) throw new MeshError('MESH_ERR_CONFIG', `Consul KV already holds mesh state at ${k}: migrate into an unused prefix (--ha-prefix)`);
    }
    const ca = store.ca.active();
    if (!ca) throw new MeshError('MESH_ERR_CONFIG', `${file} holds no CA: nothing to migrate`);
    const put = async (key: string, value: unknown): Promise<void> => {
      if (!(await api.put(key, typeof value === 'string' ? value : JSON.stringify(value), { cas: 0 }))) throw new MeshError('MESH_ERR_CONFIG', `Consul KV already holds ${key}: another migration or replica wrote it meanwhile`);
    };
    const { keyPem, ...root } = ca;
    await put(keys.ca, { ...root, key: seal(kek, keyPem, ca.fingerprint) } satisfies KvCaRecord);
    const tokenFile = join(config.dataDir, 'admin-token');
    if (existsSync(tokenFile)) await put(keys.adminToken, seal(kek, readFileSync(tokenFile, 'utf8').trim(), 'admin-token'));
    const head = store.policy.headVersion();
    for (let v = 1; v <= head; v++) await put(keys.version(v), versionOf(store, v));
    const tokens = store.tokens.list();
    for (const t of tokens) await put(keys.token(t.id), t);
    const agents = store.agents.list();
    for (const a of agents) {
      await put(keys.agent(a.id), { id: a.id, nodeName: a.nodeName, address: a.address, enrolledAt: a.enrolledAt, joinTokenId: a.joinTokenId, services: a.services, serviceLabels: a.serviceLabels, upstreams: a.upstreams } satisfies KvAgentRecord);
    }
    if (head > 0) await put(keys.head, { version: head } satisfies KvHeadRecord);
    return { prefix: ha.prefix, caFingerprint: ca.fingerprint, policyVersion: head, tokens: tokens.length, agents: agents.length };
  } finally {
    store.close();
    api.close();
  }
}

/** A stored version as the change that made it: the texts it added or changed and the documents it removed. */
function versionOf(store: Store, v: number): NewPolicyVersion {
  const row = store.policy.get(v)!;
  const docs = new Map(store.policy.documentsAt(v).map((d) => [`${d.kind}/${d.namespace}/${d.name}`, d]));
  const key = (c: { kind: string; namespace: string; name: string }): string => `${c.kind}/${c.namespace}/${c.name}`;
  return {
    version: v,
    createdAt: row.createdAt,
    actor: row.actor,
    operation: row.operation,
    ...(row.rollbackTo !== null ? { rollbackTo: row.rollbackTo } : {}),
    digest: row.digest,
    upserts: row.changes.filter((c) => c.action !== 'removed').map((c) => ({ kind: c.kind, namespace: c.namespace, name: c.name, source: docs.get(key(c))!.source })),
    removals: row.changes.filter((c) => c.action === 'removed').map((c) => ({ kind: c.kind, namespace: c.namespace, name: c.name })),
  };
}
