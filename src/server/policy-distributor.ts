// Pushes the newest signed policy version to connected agents: a delta from what each holds, one message in flight per agent.

import { MeshError } from '../errors';
import { policyDocumentKey, type PolicyMessage, type PolicyVersionRef } from '../protocol';
import type { Store, StoredPolicyDocument } from '../store';
import type { Logger } from '../telemetry';
import type { PolicySigner } from './policy-signer';

/** A connected agent, as the distributor sees it. */
export interface PolicySubscriber {
  readonly agentId: string;
  /** Queues one serialized channel message; never waits for the agent. */
  readonly send: (text: string) => void;
}

/** Where one agent stands: what it holds, what was sent and not yet answered, what it refused on this connection. */
interface AgentState {
  holding: PolicyVersionRef | undefined;
  inFlight: number | undefined;
  refused: number | undefined;
}

interface Head {
  readonly version: number;
  readonly digest: string;
  readonly documents: ReadonlyMap<string, StoredPolicyDocument>;
  readonly signature: string;
  readonly signerCert: string;
}

/** What the distributor needs from the server. */
export interface PolicyDistributorDeps {
  readonly store: Store;
  readonly signer: PolicySigner;
  readonly now: () => number;
  readonly log: Logger;
}

/**
 * The server never waits for an agent: each agent has at most one policy message in flight, and when it answers,
 * it is sent the newest version there is then (the queue is one deep and the newest version wins). A message is
 * built once per (version held, newest version) and the same text goes to every agent holding that version.
 */
export class PolicyDistributor {
  private head: Head | undefined;
  private readonly texts = new Map<string, string>();
  private readonly agents = new Map<PolicySubscriber, AgentState>();

  constructor(private readonly deps: PolicyDistributorDeps) {}

  /** An agent (channel protocol 2 or later) said hello, holding `holding`; a repeated hello keeps what is in flight. */
  subscribe(agent: PolicySubscriber, holding: PolicyVersionRef | undefined): void {
    const state = this.agents.get(agent);
    if (state) state.holding = holding;
    else this.agents.set(agent, { holding, inFlight: undefined, refused: undefined });
    this.offer(agent);
  }

  unsubscribe(agent: PolicySubscriber): void {
    this.agents.delete(agent);
  }

  /** The agent verified and holds `version`. */
  acknowledged(agent: PolicySubscriber, version: number, digest: string, override: boolean): void {
    const state = this.agents.get(agent);
    if (!state) return;
    state.holding = { version, digest };
    state.inFlight = undefined;
    this.deps.store.agents.recordPolicy(agent.agentId, version, override);
    this.deps.log.info('policy version acknowledged', { agent: agent.agentId, version, ...(override ? { override } : {}) });
    this.offer(agent);
  }

  /** The agent refused `version` and keeps `holding`. The same version is not sent to it again on this connection. */
  refused(agent: PolicySubscriber, version: number, reason: string, holding: PolicyVersionRef | undefined): void {
    const state = this.agents.get(agent);
    if (!state) return;
    state.holding = holding;
    state.inFlight = undefined;
    state.refused = version;
    this.deps.store.agents.recordPolicyRefusal(agent.agentId, version, reason, this.deps.now());
    this.deps.log.warn('policy version refused by an agent', { agent: agent.agentId, version, error: reason });
    this.offer(agent);
  }

  /** A new version was stored: offer it to every agent that has nothing in flight. */
  publish(): void {
    this.head = undefined;
    this.texts.clear();
    for (const agent of this.agents.keys()) this.offer(agent);
  }

  private offer(agent: PolicySubscriber): void {
    const state = this.agents.get(agent)!;
    if (state.inFlight !== undefined) return;
    const head = this.current();
    if (!head || state.refused === head.version) return;
    if (state.holding?.version === head.version && state.holding.digest === head.digest) return;
    state.inFlight = head.version;
    agent.send(this.message(head, state.holding));
  }

  /** The message taking an agent from `holding` to the head: a delta when the store knows that version, else all of it. */
  private message(head: Head, holding: PolicyVersionRef | undefined): string {
    const known = holding && holding.version < head.version && this.deps.store.policy.get(holding.version)?.digest === holding.digest;
    const cacheKey = known ? String(holding.version) : 'full';
    let text = this.texts.get(cacheKey);
    if (text === undefined) {
      text = JSON.stringify(known ? this.delta(head, holding) : this.full(head));
      this.texts.set(cacheKey, text);
    }
    return text;
  }

  private full(head: Head): PolicyMessage {
    return envelope(head, [...head.documents.values()], []);
  }

  private delta(head: Head, base: PolicyVersionRef): PolicyMessage {
    const before = new Map(this.deps.store.policy.documentsAt(base.version).map((d) => [policyDocumentKey(d), d]));
    const upserts = [...head.documents.values()].filter((d) => before.get(policyDocumentKey(d))?.sha256 !== d.sha256);
    const removals = [...before.values()].filter((d) => !head.documents.has(policyDocumentKey(d)));
    return envelope(head, upserts, removals, base);
  }

  /** The newest version, signed; undefined before the first one. */
  private current(): Head | undefined {
    if (this.head) return this.head;
    const row = this.deps.store.policy.get(this.deps.store.policy.headVersion());
    if (!row) return undefined;
    const documents = new Map(this.deps.store.policy.documentsAt(row.version).map((d) => [policyDocumentKey(d), d]));
    if (documents.size !== row.documents) throw new MeshError('MESH_ERR_STORE', `policy version ${row.version} should hold ${row.documents} documents, the store has ${documents.size}`);
    this.head = { version: row.version, digest: row.digest, documents, ...this.deps.signer.sign(row.version, row.digest) };
    return this.head;
  }
}

function envelope(head: Head, upserts: readonly StoredPolicyDocument[], removals: readonly StoredPolicyDocument[], base?: PolicyVersionRef): PolicyMessage {
  return {
    type: 'policy',
    version: head.version,
    digest: head.digest,
    signature: head.signature,
    signerCert: head.signerCert,
    ...(base ? { base } : {}),
    upserts: upserts.map((d) => ({ kind: d.kind, namespace: d.namespace, name: d.name, source: d.source })),
    removals: removals.map((d) => ({ kind: d.kind, namespace: d.namespace, name: d.name })),
  };
}
