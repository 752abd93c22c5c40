// One server replica in HA mode: Consul KV is the source of truth, the SQLite store a cache kept up with blocking queries.

import { describeError, MeshError } from '../../errors';
import { MESH_SERVER_SERVICE, type EnrollRequest, type EnrollResponse } from '../../protocol';
import { resolveConsulSettings } from '../../registry';
import { checkJoinToken, type CaRow, type NewPolicyVersion, type Store, type TokenRow } from '../../store';
import type { Logger } from '../../telemetry';
import type { PolicyChangeResult, PolicyService } from '../policy-service';
import type { HaConfig } from '../server-config';
import { ConsulApi, type KvEntry } from './consul-api';
import { open, readKeyEncryptionKey, seal } from './key-envelope';
import { KV_MAX_VALUE_BYTES, kvKeys, type KvAgentRecord, type KvCaRecord, type KvHeadRecord, type KvReplicaRecord } from './kv-layout';
import { LeaderElection, type ReplicaInfo } from './leader-election';

/** What a replica needs from the server. */
export interface HaReplicaDeps {
  readonly config: HaConfig;
  readonly store: Store;
  readonly me: ReplicaInfo;
  readonly log: Logger;
  readonly now: () => number;
}

/** A replica as `mesh-agent status` shows it. */
export interface ReplicaStatus extends KvReplicaRecord {
  /** Its Consul session still holds its record (it runs). */
  readonly live: boolean;
  readonly leader: boolean;
}

/** Thrown by a follower for a write; carries the leader's admin URL when one is known. */
export class NotLeaderError extends MeshError {
  constructor(message: string, readonly leaderAdmin: string | undefined) {
    super('MESH_ERR_NOT_LEADER', message);
  }
}

export class HaReplica {
  readonly election: LeaderElection;
  private readonly api: ConsulApi;
  private readonly keys: ReturnType<typeof kvKeys>;
  private readonly kek: Buffer;
  private policy: PolicyService | undefined;
  /** Serializes every change of the local policy versions (imports and the leader's writes). */
  private queue: Promise<unknown> = Promise.resolve();
  /** ModifyIndex of the policy head as last read (0: absent), the CAS index of the next write. */
  private headIndex = 0;
  private readonly seen = new Map<string, number>();
  /** Each agent's record as KV holds it (last read or written here): a hello reporting nothing new writes nothing. */
  private readonly agentRecords = new Map<string, string>();
  private readonly aborts = new Set<AbortController>();
  private checkTimer: NodeJS.Timeout | undefined;
  private closed = false;

  /** @throws MeshError MESH_ERR_HA_KEY | MESH_ERR_CONFIG */
  constructor(private readonly deps: HaReplicaDeps) {
    const { config } = deps;
    this.kek = readKeyEncryptionKey(config.keyFile);
    this.api = new ConsulApi(resolveConsulSettings(config.consul));
    this.keys = kvKeys(config.prefix);
    this.election = new LeaderElection(this.api, this.keys.leader, deps.me, config, deps.log);
  }

  /**
   * The CA all replicas share: read from KV, or — when KV has none — `candidate()` (this data dir's CA, or a new
   * one) stored there with create-only CAS, so the first replica wins and the others take its CA.
   * @throws MeshError MESH_ERR_CONSUL | MESH_ERR_HA_KEY | MESH_ERR_CONFIG (another trust domain in KV)
   */
  async sharedCa(trustDomain: string, candidate: () => CaRow): Promise<CaRow> {
    for (;;) {
      const { entry } = await this.api.get(this.keys.ca);
      if (entry) {
        const { key, ...rest } = JSON.parse(entry.value) as KvCaRecord;
        if (rest.trustDomain !== trustDomain) {
          throw new MeshError('MESH_ERR_CONFIG', `Consul KV ${this.keys.ca} holds a CA for trust domain "${rest.trustDomain}", but trustDomain is "${trustDomain}"`);
        }
        return { ...rest, keyPem: open(this.kek, key, rest.fingerprint, 'CA private key') };
      }
      const row = candidate();
      const { keyPem, ...rest } = row;
      const record: KvCaRecord = { ...rest, key: seal(this.kek, keyPem, row.fingerprint) };
      if (await this.api.put(this.keys.ca, JSON.stringify(record), { cas: 0 })) {
        this.deps.log.info('stored the CA in Consul KV, its key sealed', { key: this.keys.ca, fingerprint: row.fingerprint });
        return row;
      }
    }
  }

  /** The admin token all replicas share, sealed in KV; `candidate` is stored when KV has none. @throws MeshError MESH_ERR_CONSUL | MESH_ERR_HA_KEY */
  async sharedAdminToken(candidate: string): Promise<string> {
    for (;;) {
      const { entry } = await this.api.get(this.keys.adminToken);
      if (entry) return open(this.kek, JSON.parse(entry.value), 'admin-token', 'admin token');
      if (await this.api.put(this.keys.adminToken, JSON.stringify(seal(this.kek, candidate, 'admin-token')), { cas: 0 })) return candidate;
    }
  }

  /**
   * Brings the local store up to KV (policy versions, tokens, agents), then follows KV with blocking queries and
   * joins the election. @throws MeshError MESH_ERR_CONSUL | MESH_ERR_STORE (this data dir holds another history)
   */
  async start(policy: PolicyService): Promise<void> {
    this.policy = policy;
    await this.serialized(() => this.catchUp(true));
    this.syncTokens((await this.api.list(this.keys.tokens)).entries);
    this.syncAgents((await this.api.list(this.keys.agents)).entries);
    this.watch(this.keys.head, false, () => this.serialized(() => this.catchUp(false)));
    this.watch(this.keys.tokens, true, (e) => this.syncTokens(e));
    this.watch(this.keys.agents, true, (e) => this.syncAgents(e));
    this.election.on('session', () => void this.writeReplicaRecord());
    this.election.on('leading', () => void this.writeReplicaRecord());
    this.election.start();
  }

  /** Registers this replica as service `mesh-server` in Consul with a TTL check it keeps passing. @throws MeshError MESH_ERR_CONSUL */
  async announce(): Promise<void> {
    const { me, config } = this.deps;
    const [host, port] = [me.agent.slice(0, me.agent.lastIndexOf(':')).replace(/^\[|\]$/g, ''), Number(me.agent.slice(me.agent.lastIndexOf(':') + 1))];
    const id = `${MESH_SERVER_SERVICE}-${me.name}`;
    const register = (): Promise<void> => this.api.registerService({ id, name: MESH_SERVER_SERVICE, address: host, port, meta: { admin: me.admin, replica: me.name }, ttlMs: Math.max(1000, config.sessionTtlMs * 2) });
    await register();
    await this.api.passCheck(id);
    const tick = (): void => {
      this.checkTimer = setTimeout(() => {
        this.api
          .passCheck(id)
          .catch(() => register().then(() => this.api.passCheck(id)))
          .catch((err: unknown) => this.deps.log.warn('cannot keep the mesh-server check passing', { error: describeError(err) }))
          .finally(() => !this.closed && tick());
      }, config.sessionTtlMs / 3);
      this.checkTimer.unref();
    };
    tick();
  }

  /** @throws NotLeaderError unless this replica leads */
  requireLeader(): void {
    if (this.election.isLeader) return;
    const l = this.election.leader;
    const me = this.deps.me.name;
    throw new NotLeaderError(
      l ? `replica ${me} does not lead; the leader is ${l.name} at ${l.admin}` : `replica ${me} does not lead and no replica leads right now (an election takes up to the session TTL + lock delay); retry`,
      l?.admin,
    );
  }

  /**
   * Runs a policy change on the leader: caught up with KV first, the new version written with one transaction
   * that checks this replica's session still holds the lock, CASes the head and creates the version key; only
   * then is it stored locally and pushed. A refused transaction means another replica leads: step down.
   * @throws NotLeaderError | MeshError MESH_ERR_CONSUL | whatever the change throws
   */
  write(change: () => PolicyChangeResult): Promise<PolicyChangeResult> {
    return this.serialized(async () => {
      this.requireLeader();
      await this.catchUp(false);
      const result = await this.policy!.replicated(change, async (v) => {
        const value = JSON.stringify(v);
        if (Buffer.byteLength(value) > KV_MAX_VALUE_BYTES) {
          throw new MeshError('MESH_ERR_BAD_REQUEST', `policy version ${v.version} holds ${Buffer.byteLength(value)} bytes of changes; one version must fit Consul's ${KV_MAX_VALUE_BYTES}-byte KV value limit in HA mode: apply it in parts`);
        }
        const session = this.election.session;
        if (!session || !this.election.isLeader) this.requireLeader();
        const head: KvHeadRecord = { version: v.version };
        const failed = await this.api.txn([
          { verb: 'check-session', key: this.keys.leader, session: session! },
          { verb: 'cas', key: this.keys.head, value: JSON.stringify(head), index: this.headIndex },
          { verb: 'cas', key: this.keys.version(v.version), value, index: 0 },
        ]);
        if (failed) {
          this.election.stepDown(`Consul refused the write of policy version ${v.version}: ${failed}`);
          throw new NotLeaderError(`this replica's write of policy version ${v.version} was refused by Consul (${failed}): it no longer leads and stepped down; retry`, undefined);
        }
        this.deps.log.info('policy version written to Consul KV', { version: v.version });
      });
      if (result.created) void this.writeReplicaRecord();
      return result;
    });
  }

  /** Stores a new join token in KV (create-only), then locally. The leader only. @throws NotLeaderError | MeshError MESH_ERR_CONSUL */
  async createToken(row: Omit<TokenRow, 'used' | 'lastUsedAt'>): Promise<void> {
    this.requireLeader();
    const record: TokenRow = { ...row, used: 0, lastUsedAt: null };
    if (!(await this.api.put(this.keys.token(row.id), JSON.stringify(record), { cas: 0 }))) {
      throw new MeshError('MESH_ERR_INTERNAL', `join token id ${row.id} already exists in Consul KV`);
    }
    this.deps.store.tokens.upsert(record);
  }

  /**
   * Enrolls on any replica: the token's use is counted in KV with CAS (two replicas cannot both spend its last
   * use), then `enroll` runs locally and the agent record goes to KV for the other replicas.
   * @throws MeshError MESH_ERR_TOKEN_* | MESH_ERR_CONSUL
   */
  async enroll(req: EnrollRequest, enroll: () => EnrollResponse): Promise<EnrollResponse> {
    const key = this.keys.token(req.tokenId);
    for (let attempt = 0; attempt < 10; attempt++) {
      const { entry } = await this.api.get(key);
      const now = this.deps.now();
      const row = checkJoinToken(entry && (JSON.parse(entry.value) as TokenRow), req.tokenId, req.tokenSecret, now);
      if (!(await this.api.put(key, JSON.stringify({ ...row, used: row.used + 1, lastUsedAt: now }), { cas: entry!.modifyIndex }))) continue;
      this.deps.store.tokens.upsert(row); // as before this use: enroll() counts it locally
      const answer = enroll();
      const a = this.deps.store.agents.get(answer.agentId)!;
      const record: KvAgentRecord = { id: a.id, nodeName: a.nodeName, address: a.address, enrolledAt: a.enrolledAt, joinTokenId: a.joinTokenId };
      await this.api.put(this.keys.agent(a.id), JSON.stringify(record), { cas: 0 });
      return answer;
    }
    throw new MeshError('MESH_ERR_CONSUL', `join token ${req.tokenId} is being used by other enrollments at the same time; retry`);
  }

  /**
   * An agent said hello here: its record in KV gets what it reported (other replicas learn its services). An
   * unchanged report — an agent moving here from a failed replica — writes nothing, so a failover does not make
   * every replica read all agent records again for each agent that moved.
   */
  reportAgent(agentId: string): void {
    const a = this.deps.store.agents.get(agentId);
    if (!a) return;
    const record: KvAgentRecord = { id: a.id, nodeName: a.nodeName, address: a.address, enrolledAt: a.enrolledAt, joinTokenId: a.joinTokenId, services: a.services, serviceLabels: a.serviceLabels, upstreams: a.upstreams };
    const value = JSON.stringify(record);
    if (this.agentRecords.get(a.id) === value) return;
    this.agentRecords.set(a.id, value);
    this.api.put(this.keys.agent(a.id), value).catch((err: unknown) => {
      this.agentRecords.delete(a.id);
      this.deps.log.warn('cannot record an agent report in Consul KV', { agent: agentId, error: describeError(err) });
    });
  }

  /** Replicas (from their KV records; none, with `error`, while Consul does not answer), who leads, each one's applied version. */
  async status(): Promise<{ mode: 'consul'; prefix: string; replica: string; leading: boolean; leader: string | null; replicas: ReplicaStatus[]; error?: string }> {
    const leader = this.election.leader?.name ?? null;
    const base = { mode: 'consul' as const, prefix: this.deps.config.prefix, replica: this.deps.me.name, leading: this.election.isLeader, leader };
    try {
      const { entries } = await this.api.list(this.keys.replicas);
      const replicas = entries.map((e) => {
        const r = JSON.parse(e.value) as KvReplicaRecord;
        return { ...r, live: e.session !== undefined, leader: r.name === leader };
      });
      return { ...base, replicas };
    } catch (err) {
      return { ...base, replicas: [], error: describeError(err) };
    }
  }

  /** Leaves the election (releasing the lock), stops following KV and deregisters the service. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.checkTimer);
    for (const a of this.aborts) a.abort();
    await this.election.close();
    await this.api.deregisterService(`${MESH_SERVER_SERVICE}-${this.deps.me.name}`).catch(() => undefined);
    this.api.close();
  }

  /** Imports the versions KV has beyond the local head. On the first run, checks both histories agree. */
  private async catchUp(first: boolean): Promise<void> {
    const { entry } = await this.api.get(this.keys.head);
    this.headIndex = entry?.modifyIndex ?? 0;
    const head = entry ? (JSON.parse(entry.value) as KvHeadRecord).version : 0;
    const store = this.deps.store.policy;
    const local = store.headVersion();
    if (first && local > 0) {
      const mine = store.get(local)!.digest;
      const { entry: theirs } = await this.api.get(this.keys.version(local));
      if (local > head || !theirs || (JSON.parse(theirs.value) as NewPolicyVersion).digest !== mine) {
        throw new MeshError('MESH_ERR_STORE', `this data dir's policy history (version ${local}) is not the one in Consul KV under ${this.deps.config.prefix} (head ${head}): start this replica with an empty data dir, or migrate a single server's state with "mesh-agent server migrate-to-ha"`);
      }
    }
    for (let v = local + 1; v <= head; v++) {
      const { entry: e } = await this.api.get(this.keys.version(v));
      if (!e) throw new MeshError('MESH_ERR_CONSUL', `Consul KV has policy head ${head} but no ${this.keys.version(v)}`);
      this.policy!.storeReplicated(JSON.parse(e.value) as NewPolicyVersion);
    }
    if (head > local) void this.writeReplicaRecord();
  }

  private syncTokens(entries: readonly KvEntry[]): void {
    for (const e of entries) if (this.fresh(e)) this.deps.store.tokens.upsert(JSON.parse(e.value) as TokenRow);
  }

  private syncAgents(entries: readonly KvEntry[]): void {
    for (const e of entries) {
      if (!this.fresh(e)) continue;
      const r = JSON.parse(e.value) as KvAgentRecord;
      this.agentRecords.set(r.id, e.value);
      this.deps.store.agents.insertIfMissing(r);
      if (r.services) this.deps.store.agents.touch(r.id, this.deps.store.agents.get(r.id)?.lastSeenAt ?? r.enrolledAt, { address: r.address, services: r.services, serviceLabels: r.serviceLabels ?? {}, upstreams: r.upstreams ?? [] });
    }
  }

  /** True the first time an entry is seen at this ModifyIndex. */
  private fresh(e: KvEntry): boolean {
    if (this.seen.get(e.key) === e.modifyIndex) return false;
    this.seen.set(e.key, e.modifyIndex);
    return true;
  }

  private async writeReplicaRecord(): Promise<void> {
    const session = this.election.session;
    if (!session || this.closed) return;
    const { me } = this.deps;
    const record: KvReplicaRecord = { name: me.name, admin: me.admin, agent: me.agent, appliedVersion: this.deps.store.policy.headVersion(), updatedAt: this.deps.now() };
    try {
      if (!(await this.api.put(this.keys.replica(me.name), JSON.stringify(record), { acquire: session }))) {
        this.deps.log.warn('another live replica uses this replica name', { replica: me.name });
      }
    } catch (err) {
      this.deps.log.debug('cannot write the replica record', { error: describeError(err) });
    }
  }

  /** Follows a key (or a prefix) with blocking queries, resetting when the index goes backwards. */
  private watch(key: string, prefix: boolean, changed: (entries: KvEntry[]) => unknown): void {
    void (async () => {
      let index = 0;
      let backoff = 100;
      while (!this.closed) {
        const abort = new AbortController();
        this.aborts.add(abort);
        try {
          const block = { index, waitMs: this.deps.config.waitMs };
          const r = prefix ? await this.api.list(key, block, abort.signal) : await this.api.get(key, block, abort.signal).then((g) => ({ entries: g.entry ? [g.entry] : [], index: g.index }));
          index = r.index < index ? 0 : r.index;
          await changed(r.entries);
          backoff = 100;
        } catch (err) {
          if (this.closed) return;
          this.deps.log.warn('following Consul KV failed, retrying', { key, error: describeError(err), inMs: backoff });
          await new Promise((resolve) => setTimeout(resolve, backoff).unref());
          backoff = Math.min(backoff * 2, 5000);
        } finally {
          this.aborts.delete(abort);
        }
      }
    })();
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}
