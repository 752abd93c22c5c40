// The policy gossip exchange between agents (docs/gossip.md): newline-delimited JSON on an mTLS connection to a peer's
// inbound port that chose the ALPN protocol `mesh-gossip/1`, parsed and bounded at the edge.

import { MeshError } from '../errors';
import { parseJson } from './channel-messages';
import { POLICY_DIGEST_PATTERN, type PolicyDocumentSource, type PolicyVersionRef } from './policy-digest';

/** The ALPN protocol id that takes an inbound connection to the gossip exchange instead of a local service. */
export const GOSSIP_ALPN = 'mesh-gossip/1';

/** The largest message (one line) either side accepts: a whole policy version travels in one. */
export const MAX_GOSSIP_MESSAGE_BYTES = 16 * 1024 * 1024;

/** A whole signed version, as a peer holds it (what `policy.json` caches). */
export interface GossipPolicy {
  readonly type: 'policy';
  readonly version: number;
  readonly digest: string;
  readonly signature: string;
  readonly signerCert: string;
  readonly documents: readonly PolicyDocumentSource[];
}

/**
 * hello: sent by both sides first, with the version held (none before the first one). pull: asks for the version
 * the peer holds. policy: the answer to a pull. done: this side needs nothing more; the exchange ends when both said it.
 */
export type GossipMessage =
  | { readonly type: 'hello'; readonly protocol: number; readonly policy?: PolicyVersionRef }
  | { readonly type: 'pull'; readonly version: number }
  | GossipPolicy
  | { readonly type: 'done' };

const bad = (why: string): MeshError => new MeshError('MESH_ERR_GOSSIP', why);

function str(o: Record<string, unknown>, key: string, what: string, max: number): string {
  const v = o[key];
  if (typeof v !== 'string' || v.length === 0 || v.length > max) throw bad(`${what}.${key} must be a non-empty string of at most ${max} characters`);
  return v;
}

function version(o: Record<string, unknown>, what: string): number {
  const v = o.version;
  if (!Number.isSafeInteger(v) || (v as number) < 1) throw bad(`${what}.version must be an integer of at least 1`);
  return v as number;
}

function digest(o: Record<string, unknown>, what: string): string {
  const d = str(o, 'digest', what, 80);
  if (!POLICY_DIGEST_PATTERN.test(d)) throw bad(`${what}.digest must look like sha256:<64 hex digits>`);
  return d;
}

function object(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(`${what} must be a JSON object`);
  return v as Record<string, unknown>;
}

/** Checks one message from a peer. @throws MeshError MESH_ERR_GOSSIP naming the bad field */
export function parseGossipMessage(text: string): GossipMessage {
  let o: Record<string, unknown>;
  try {
    o = object(parseJson(text, 'gossip message'), 'gossip message');
  } catch (err) {
    throw bad((err as Error).message);
  }
  switch (o.type) {
    case 'hello': {
      if (!Number.isSafeInteger(o.protocol) || (o.protocol as number) < 1) throw bad('hello.protocol must be an integer of at least 1');
      if (o.policy === undefined) return { type: 'hello', protocol: o.protocol as number };
      const p = object(o.policy, 'hello.policy');
      return { type: 'hello', protocol: o.protocol as number, policy: { version: version(p, 'hello.policy'), digest: digest(p, 'hello.policy') } };
    }
    case 'pull':
      return { type: 'pull', version: version(o, 'pull') };
    case 'policy': {
      if (!Array.isArray(o.documents)) throw bad('policy.documents must be a list');
      const documents = o.documents.map((d: unknown, i) => {
        const at = `policy.documents[${i}]`;
        const x = object(d, at);
        return { kind: str(x, 'kind', at, 64), namespace: str(x, 'namespace', at, 63), name: str(x, 'name', at, 253), source: str(x, 'source', at, MAX_GOSSIP_MESSAGE_BYTES) };
      });
      return {
        type: 'policy',
        version: version(o, 'policy'),
        digest: digest(o, 'policy'),
        signature: str(o, 'signature', 'policy', 1024),
        signerCert: str(o, 'signerCert', 'policy', 16_384),
        documents,
      };
    }
    case 'done':
      return { type: 'done' };
    default:
      throw bad(`unknown gossip message type ${JSON.stringify(o.type)} (expected hello, pull, policy or done)`);
  }
}
