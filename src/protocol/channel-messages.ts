// The messages of the agent <-> server channel (JSON over WebSocket over mTLS), parsed and checked at the edge.

import { MeshError } from '../errors';
import { POLICY_DIGEST_PATTERN, type PolicyDocumentKey, type PolicyDocumentSource, type PolicyVersionRef } from './policy-digest';
import { parseStatsMessage, type StatsMessage } from './stats-message';

/**
 * The channel protocol's version. 1: enrollment, certificates, reports. 2: policy push (`policy`, `policy-ack`,
 * `policy-nack`). 3: `stats` (request counts for the dashboard), which an agent sends only to a server that speaks 3
 * or later, and live taps (`tap-start`, `tap-stop`, `tap-records`). Each side says its number (`hello.protocol`,
 * `welcome.protocol`; absent means 1), and the server pushes policy only to agents that speak 2 or later, taps to
 * those that speak 3. Fields a side does not know are ignored.
 */
export const CHANNEL_PROTOCOL = 3;

/** What a live tap selects (every given field must match): see MeshTelemetry's TapFilter. */
export interface TapFilterMessage {
  readonly to?: string;
  readonly from?: string;
  readonly pathPrefix?: string;
}

/** Most request records in one `tap-records` message; an agent drops (and counts) what does not fit. */
export const MAX_TAP_RECORDS = 100;

/** The Consul service every server replica registers in HA mode; agents with consul.discoverServers find servers by it. */
export const MESH_SERVER_SERVICE = 'mesh-server';

/** A local service an agent runs, as it reports it. */
export interface ServiceRef {
  readonly name: string;
  readonly namespace: string;
}

/** A local service with its workload labels (what policy selectors match). */
export interface WorkloadRef extends ServiceRef {
  /** @default {} (older agents send none) */
  readonly labels: Readonly<Record<string, string>>;
}

/** What an agent says when it connects. */
export interface HelloMessage {
  readonly type: 'hello';
  readonly nodeName: string;
  readonly address: string;
  readonly services: readonly WorkloadRef[];
  /** The services its local apps call (explicit upstreams). @default [] */
  readonly upstreams: readonly ServiceRef[];
  /** mesh-agent's version. */
  readonly version: string;
  /** @default 1 */
  readonly protocol: number;
  /** The mesh policy version it holds (verified, cached), if any. */
  readonly policy?: PolicyVersionRef;
  /** True when a local policy file is in force instead of the mesh policy. @default false */
  readonly policyOverride: boolean;
}

/**
 * One mesh policy version, signed: all of it (no `base`) or the changes from `base`, the version the agent holds.
 * The signature covers (version, digest), where digest is over the whole document set after the changes.
 */
export interface PolicyMessage {
  readonly type: 'policy';
  readonly version: number;
  readonly digest: string;
  /** Base64 ECDSA P-256 / SHA-256 signature of the policy signing payload. */
  readonly signature: string;
  /** PEM certificate of the signer, spiffe://<td>/server/policy, issued by a root of the trust bundle. */
  readonly signerCert: string;
  readonly base?: PolicyVersionRef;
  /** Documents added or changed (with `base`), or every document (without). */
  readonly upserts: readonly PolicyDocumentSource[];
  /** Documents removed since `base`. */
  readonly removals: readonly PolicyDocumentKey[];
}

/** Agent to server. */
export type AgentMessage =
  | HelloMessage
  | { readonly type: 'sign'; readonly id: number; readonly kind: 'workload' | 'node'; readonly service?: ServiceRef; readonly csr: string }
  | { readonly type: 'report'; readonly certificates: readonly { spiffeId: string; serial: string; notAfter: string }[] }
  | { readonly type: 'policy-ack'; readonly version: number; readonly digest: string; readonly override: boolean }
  | { readonly type: 'policy-nack'; readonly version: number; readonly code: string; readonly message: string; readonly holding?: PolicyVersionRef }
  | StatsMessage
  /** Records a tap selected since the last message (none: the tap started), and how many were dropped meanwhile. */
  | { readonly type: 'tap-records'; readonly id: string; readonly records: readonly Record<string, unknown>[]; readonly dropped: number };

/** Server to agent. */
export type ServerMessage =
  | { readonly type: 'welcome'; readonly trustDomain: string; readonly roots: readonly string[]; readonly agentId: string; readonly protocol: number }
  | { readonly type: 'signed'; readonly id: number; readonly cert: string }
  | { readonly type: 'error'; readonly id?: number; readonly code: string; readonly message: string }
  | PolicyMessage
  | { readonly type: 'tap-start'; readonly id: string; readonly filter: TapFilterMessage }
  | { readonly type: 'tap-stop'; readonly id: string };

/** Body of POST /v1/enroll. */
export interface EnrollRequest {
  readonly tokenId: string;
  readonly tokenSecret: string;
  readonly nodeName: string;
  readonly csr: string;
}

/** Answer to POST /v1/enroll. */
export interface EnrollResponse {
  readonly agentId: string;
  readonly trustDomain: string;
  readonly nodeCert: string;
  readonly roots: readonly string[];
}

const bad = (why: string): MeshError => new MeshError('MESH_ERR_BAD_REQUEST', why);

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(`${what} must be a JSON object`);
  return v as Record<string, unknown>;
}

function str(o: Record<string, unknown>, key: string, what: string, max = 16_384): string {
  const v = o[key];
  if (typeof v !== 'string' || v.length === 0 || v.length > max) throw bad(`${what}.${key} must be a non-empty string of at most ${max} characters`);
  return v;
}

/** Service and namespace names, as agent configs allow them. */
const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

function service(v: unknown, what: string): ServiceRef {
  const o = obj(v, what);
  const name = str(o, 'name', what, 63);
  const namespace = str(o, 'namespace', what, 63);
  if (!NAME.test(name) || !NAME.test(namespace)) throw bad(`${what}: service and namespace names are lower-case letters, digits and "-"`);
  return { name, namespace };
}

function labels(v: unknown, what: string): Record<string, string> {
  if (v === undefined) return {};
  const o = obj(v, what);
  // Only the shape is checked: the agent config validated the names, and the message size bounds the rest.
  if (!Object.values(o).every((x) => typeof x === 'string')) throw bad(`${what} must map label names to strings`);
  return o as Record<string, string>;
}

function workload(v: unknown, what: string): WorkloadRef {
  return { ...service(v, what), labels: labels((v as Record<string, unknown>).labels, `${what}.labels`) };
}

function list<T>(o: Record<string, unknown>, key: string, what: string, item: (v: unknown, at: string) => T, optional = false): T[] {
  const v = o[key];
  if (v === undefined && optional) return [];
  if (!Array.isArray(v)) throw bad(`${what}.${key} must be a list`);
  return v.map((x, i) => item(x, `${what}.${key}[${i}]`));
}

function count(o: Record<string, unknown>, key: string, what: string, min: number): number {
  const v = o[key];
  if (!Number.isSafeInteger(v) || (v as number) < min) throw bad(`${what}.${key} must be an integer of at least ${min}`);
  return v as number;
}

function versionRef(v: unknown, what: string): PolicyVersionRef {
  const o = obj(v, what);
  const digest = str(o, 'digest', what, 80);
  if (!POLICY_DIGEST_PATTERN.test(digest)) throw bad(`${what}.digest must look like sha256:<64 hex digits>`);
  return { version: count(o, 'version', what, 1), digest };
}

/** Policy documents may be large; the message size limit bounds them. */
const MAX_SOURCE = 16 * 1024 * 1024;

function documentKey(v: unknown, what: string): PolicyDocumentKey {
  const o = obj(v, what);
  return { kind: str(o, 'kind', what, 64), namespace: str(o, 'namespace', what, 63), name: str(o, 'name', what, 253) };
}

function documentSource(v: unknown, what: string): PolicyDocumentSource {
  const o = obj(v, what);
  return { ...documentKey(o, what), source: str(o, 'source', what, MAX_SOURCE) };
}

/** A tap filter: optional strings `to`, `from`, `pathPrefix`. */
export function tapFilter(v: unknown): TapFilterMessage {
  const o = v === undefined ? {} : obj(v, 'tap filter');
  const out: { to?: string; from?: string; pathPrefix?: string } = {};
  for (const k of ['to', 'from', 'pathPrefix'] as const) if (o[k] !== undefined) out[k] = str(o, k, 'tap filter', k === 'pathPrefix' ? 2048 : 253);
  return out;
}

/** Parses JSON text from a peer. @throws MeshError MESH_ERR_BAD_REQUEST */
export function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw bad(`${what} is not valid JSON: ${(err as Error).message}`);
  }
}

/** Checks a message from an agent. @throws MeshError MESH_ERR_BAD_REQUEST naming the bad field */
export function parseAgentMessage(text: string): AgentMessage {
  const o = obj(parseJson(text, 'message'), 'message');
  switch (o.type) {
    case 'hello': {
      if (!Array.isArray(o.services)) throw bad('hello.services must be a list');
      return {
        type: 'hello',
        nodeName: str(o, 'nodeName', 'hello', 253),
        address: typeof o.address === 'string' ? o.address : '',
        services: o.services.map((s, i) => workload(s, `hello.services[${i}]`)),
        upstreams: list(o, 'upstreams', 'hello', service, true),
        version: typeof o.version === 'string' ? o.version : 'unknown',
        protocol: o.protocol === undefined ? 1 : count(o, 'protocol', 'hello', 1),
        ...(o.policy !== undefined ? { policy: versionRef(o.policy, 'hello.policy') } : {}),
        policyOverride: o.policyOverride === true,
      };
    }
    case 'policy-ack': {
      const digest = str(o, 'digest', 'policy-ack', 80);
      if (!POLICY_DIGEST_PATTERN.test(digest)) throw bad('policy-ack.digest must look like sha256:<64 hex digits>');
      return { type: 'policy-ack', version: count(o, 'version', 'policy-ack', 1), digest, override: o.override === true };
    }
    case 'policy-nack':
      return {
        type: 'policy-nack',
        version: count(o, 'version', 'policy-nack', 1),
        code: str(o, 'code', 'policy-nack', 64),
        message: str(o, 'message', 'policy-nack', 16_384),
        ...(o.holding !== undefined ? { holding: versionRef(o.holding, 'policy-nack.holding') } : {}),
      };
    case 'sign': {
      if (!Number.isInteger(o.id)) throw bad('sign.id must be an integer');
      if (o.kind !== 'workload' && o.kind !== 'node') throw bad('sign.kind must be "workload" or "node"');
      const csr = str(o, 'csr', 'sign');
      if (o.kind === 'workload') return { type: 'sign', id: o.id as number, kind: 'workload', service: service(o.service, 'sign.service'), csr };
      return { type: 'sign', id: o.id as number, kind: 'node', csr };
    }
    case 'report': {
      if (!Array.isArray(o.certificates)) throw bad('report.certificates must be a list');
      const certificates = o.certificates.map((c, i) => {
        const co = obj(c, `report.certificates[${i}]`);
        return { spiffeId: str(co, 'spiffeId', 'certificate'), serial: str(co, 'serial', 'certificate'), notAfter: str(co, 'notAfter', 'certificate') };
      });
      return { type: 'report', certificates };
    }
    case 'stats':
      return parseStatsMessage(o);
    case 'tap-records': {
      const records = list(o, 'records', 'tap-records', (v, at) => obj(v, at));
      if (records.length > MAX_TAP_RECORDS) throw bad(`tap-records.records holds ${records.length} records, at most ${MAX_TAP_RECORDS}`);
      return { type: 'tap-records', id: str(o, 'id', 'tap-records', 64), records, dropped: o.dropped === undefined ? 0 : count(o, 'dropped', 'tap-records', 0) };
    }
    default:
      throw bad(`unknown message type ${JSON.stringify(o.type)} (expected hello, sign, report, policy-ack, policy-nack, stats or tap-records)`);
  }
}

/** Checks a message from the server. @throws MeshError MESH_ERR_BAD_REQUEST */
export function parseServerMessage(text: string): ServerMessage {
  const o = obj(parseJson(text, 'message'), 'message');
  switch (o.type) {
    case 'welcome':
      if (!Array.isArray(o.roots) || !o.roots.every((r) => typeof r === 'string')) throw bad('welcome.roots must be a list of PEM strings');
      return {
        type: 'welcome',
        trustDomain: str(o, 'trustDomain', 'welcome'),
        roots: o.roots as string[],
        agentId: str(o, 'agentId', 'welcome'),
        protocol: o.protocol === undefined ? 1 : count(o, 'protocol', 'welcome', 1),
      };
    case 'signed':
      if (!Number.isInteger(o.id)) throw bad('signed.id must be an integer');
      return { type: 'signed', id: o.id as number, cert: str(o, 'cert', 'signed') };
    case 'error':
      return { type: 'error', ...(Number.isInteger(o.id) ? { id: o.id as number } : {}), code: str(o, 'code', 'error'), message: str(o, 'message', 'error') };
    case 'policy': {
      const digest = str(o, 'digest', 'policy', 80);
      if (!POLICY_DIGEST_PATTERN.test(digest)) throw bad('policy.digest must look like sha256:<64 hex digits>');
      return {
        type: 'policy',
        version: count(o, 'version', 'policy', 1),
        digest,
        signature: str(o, 'signature', 'policy', 1024),
        signerCert: str(o, 'signerCert', 'policy'),
        ...(o.base !== undefined ? { base: versionRef(o.base, 'policy.base') } : {}),
        upserts: list(o, 'upserts', 'policy', documentSource),
        removals: list(o, 'removals', 'policy', documentKey),
      };
    }
    case 'tap-start':
      return { type: 'tap-start', id: str(o, 'id', 'tap-start', 64), filter: tapFilter(o.filter) };
    case 'tap-stop':
      return { type: 'tap-stop', id: str(o, 'id', 'tap-stop', 64) };
    default:
      throw bad(`unknown message type ${JSON.stringify(o.type)}`);
  }
}

/** Checks an enrollment request body. @throws MeshError MESH_ERR_BAD_REQUEST */
export function parseEnrollRequest(text: string): EnrollRequest {
  const o = obj(parseJson(text, 'enroll request'), 'enroll request');
  return {
    tokenId: str(o, 'tokenId', 'enroll', 64),
    tokenSecret: str(o, 'tokenSecret', 'enroll', 256),
    nodeName: str(o, 'nodeName', 'enroll', 253),
    csr: str(o, 'csr', 'enroll'),
  };
}
