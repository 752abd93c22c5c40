// The mesh policy an agent holds: versions pushed by the server (or pulled from peers), verified and compiled, the last
// good one cached on disk.

import { verifyPolicySignature } from '../ca';
import { describeError, MeshError } from '../errors';
import { compilePolicy, parsePolicyText, type CompiledPolicy, type PolicyDocument } from '../policy';
import { comparePolicyDocuments, policyDigest, policyDocumentKey, type PolicyDocumentSource, type PolicyMessage, type PolicyVersionRef } from '../protocol';
import type { Logger } from '../telemetry';
import type { StateDir } from './state-dir';

/** The cache file in the state dir. */
export const POLICY_CACHE_FILE = 'policy.json';

/** A verified version: what is cached, and what the agent can prove to anyone holding the roots. */
export interface HeldPolicyVersion {
  readonly version: number;
  readonly digest: string;
  readonly signature: string;
  readonly signerCert: string;
  /** In canonical order. */
  readonly documents: readonly PolicyDocumentSource[];
}

/** What the agent needs to check versions. */
export interface MeshPolicyDeps {
  readonly state: StateDir;
  readonly trustDomain: string;
  /** The trust bundle now (it can change on welcome). */
  readonly roots: () => readonly string[];
  readonly now: () => number;
  readonly log: Logger;
}

export class MeshPolicy {
  private held: HeldPolicyVersion | undefined;
  /** The held version, compiled (what the agent applies when no policy file overrides it). */
  compiled: CompiledPolicy | undefined;
  /** The last version refused, and why (shown in the agent's status). */
  lastRefusal: { readonly version: number; readonly error: string; readonly at: string } | undefined;

  constructor(private readonly deps: MeshPolicyDeps) {}

  /** The version held, for hello and NACKs. */
  get holding(): PolicyVersionRef | undefined {
    return this.held && { version: this.held.version, digest: this.held.digest };
  }

  /** The whole version held, signed, as peers pull it. */
  get current(): HeldPolicyVersion | undefined {
    return this.held;
  }

  /**
   * The cached version, checked as when it arrived except for the signer's validity dates (it was valid then, and
   * the server may be away for long), and compiled. Undefined, with the reason logged, when there is none or it
   * does not check: the agent then starts with Istio's defaults and waits for the server.
   */
  loadCached(): CompiledPolicy | undefined {
    const text = this.deps.state.read(POLICY_CACHE_FILE);
    if (text === undefined) return undefined;
    try {
      const cached = readCache(text);
      const compiled = this.check(cached, undefined);
      this.held = cached;
      this.compiled = compiled;
      this.deps.log.info('mesh policy loaded from the cache', { version: cached.version, documents: cached.documents.length });
      return compiled;
    } catch (err) {
      this.deps.log.error('cached mesh policy not usable, starting without it', { file: `${this.deps.state.dir}/${POLICY_CACHE_FILE}`, error: describeError(err) });
      return undefined;
    }
  }

  /**
   * Takes a pushed version: builds its document set (the held one plus the delta), checks it against the signed
   * digest, the signature and its signer, parses and compiles it; then holds it and caches it.
   * @throws MeshError MESH_ERR_POLICY_SIGNATURE, MESH_ERR_POLICY_INVALID or MESH_ERR_BAD_REQUEST; the held version stays
   */
  accept(msg: PolicyMessage): CompiledPolicy {
    try {
      const next: HeldPolicyVersion = { version: msg.version, digest: msg.digest, signature: msg.signature, signerCert: msg.signerCert, documents: this.documentsAfter(msg) };
      const compiled = this.check(next, this.deps.now());
      if (this.held && msg.version < this.held.version) this.deps.log.warn('the server sent an older policy version than the one held; taking it', { held: this.held.version, version: msg.version });
      this.hold(next, compiled);
      this.lastRefusal = undefined;
      return compiled;
    } catch (err) {
      this.lastRefusal = { version: msg.version, error: describeError(err), at: new Date(this.deps.now()).toISOString() };
      throw err;
    }
  }

  /**
   * Takes a whole version a peer offered (gossip): only a newer one than held, never moving back, checked like a
   * pushed one (digest, signature, the signer now, every document). A refusal is the caller's to record.
   * @throws MeshError MESH_ERR_GOSSIP (not newer), MESH_ERR_POLICY_SIGNATURE or MESH_ERR_POLICY_INVALID; the held version stays
   */
  acceptFromPeer(v: HeldPolicyVersion): CompiledPolicy {
    if (this.held && v.version <= this.held.version) throw new MeshError('MESH_ERR_GOSSIP', `policy version ${v.version} from a peer is not newer than version ${this.held.version}, held here`);
    const next: HeldPolicyVersion = { version: v.version, digest: v.digest, signature: v.signature, signerCert: v.signerCert, documents: [...v.documents].sort(comparePolicyDocuments) };
    const compiled = this.check(next, this.deps.now());
    this.hold(next, compiled);
    return compiled;
  }

  private hold(v: HeldPolicyVersion, compiled: CompiledPolicy): void {
    this.held = v;
    this.compiled = compiled;
    this.save(v);
  }

  private documentsAfter(msg: PolicyMessage): PolicyDocumentSource[] {
    const docs = new Map<string, PolicyDocumentSource>();
    if (msg.base) {
      const held = this.held;
      if (held?.version !== msg.base.version || held.digest !== msg.base.digest) {
        throw new MeshError('MESH_ERR_BAD_REQUEST', `policy version ${msg.version} is a delta from version ${msg.base.version}, but this agent holds ${held ? `version ${held.version}` : 'no version'}`);
      }
      for (const d of held.documents) docs.set(policyDocumentKey(d), d);
      for (const k of msg.removals) {
        if (!docs.delete(policyDocumentKey(k))) throw new MeshError('MESH_ERR_BAD_REQUEST', `policy version ${msg.version} removes ${policyDocumentKey(k)}, which version ${held.version} does not hold`);
      }
    }
    const upserted = new Set<string>();
    for (const d of msg.upserts) {
      const key = policyDocumentKey(d);
      if (upserted.has(key)) throw new MeshError('MESH_ERR_BAD_REQUEST', `policy version ${msg.version} carries ${key} twice`);
      upserted.add(key);
      docs.set(key, { kind: d.kind, namespace: d.namespace, name: d.name, source: d.source });
    }
    return [...docs.values()].sort(comparePolicyDocuments);
  }

  /** Digest, signature (and the signer's dates when `at` is given), then every document parsed and the whole compiled. */
  private check(v: HeldPolicyVersion, at: number | undefined): CompiledPolicy {
    const digest = policyDigest(v.documents);
    if (digest !== v.digest) throw new MeshError('MESH_ERR_POLICY_SIGNATURE', `policy version ${v.version}: its documents hash to ${digest}, not to the signed ${v.digest}`);
    verifyPolicySignature(v, this.deps.roots(), this.deps.trustDomain, at);
    return compilePolicy(v.documents.map((d) => parseOne(d, v.version)));
  }

  /** Replaces the cache file atomically (write, then rename). A failure is logged: the version is still applied. */
  private save(v: HeldPolicyVersion): void {
    try {
      this.deps.state.write(POLICY_CACHE_FILE, `${JSON.stringify(v)}\n`, 0o644);
    } catch (err) {
      this.deps.log.error('cannot cache the mesh policy; a restart would start from an older version', { version: v.version, error: describeError(err) });
    }
  }
}

/** Parses one document's source; it must be exactly the document its key names. */
function parseOne(d: PolicyDocumentSource, version: number): PolicyDocument {
  const label = `policy version ${version} ${policyDocumentKey(d)}`;
  const docs = parsePolicyText(d.source, label);
  const doc = docs[0];
  if (docs.length !== 1 || !doc || doc.kind !== d.kind || doc.metadata.namespace !== d.namespace || doc.metadata.name !== d.name) {
    throw new MeshError('MESH_ERR_POLICY_INVALID', `${label}: the source holds ${docs.map((x) => `${x.kind}/${x.metadata.namespace}/${x.metadata.name}`).join(', ') || 'no document'}, not that one document`);
  }
  return doc;
}

/** The cache file's JSON, checked for shape (its content is checked like a pushed version). */
function readCache(text: string): HeldPolicyVersion {
  const v = JSON.parse(text) as HeldPolicyVersion;
  const strings = (o: object, keys: string[]): boolean => keys.every((k) => typeof (o as Record<string, unknown>)[k] === 'string');
  if (
    typeof v !== 'object' ||
    v === null ||
    !Number.isSafeInteger(v.version) ||
    !strings(v, ['digest', 'signature', 'signerCert']) ||
    !Array.isArray(v.documents) ||
    !v.documents.every((d) => typeof d === 'object' && d !== null && strings(d, ['kind', 'namespace', 'name', 'source']))
  ) {
    throw new MeshError('MESH_ERR_STATE_DIR', `${POLICY_CACHE_FILE} is not a cached policy version`);
  }
  return v;
}
