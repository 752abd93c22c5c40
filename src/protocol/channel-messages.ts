// The messages of the agent <-> server channel (JSON over WebSocket over mTLS), parsed and checked at the edge.

import { MeshError } from '../errors';

/** A local service an agent runs, as it reports it. */
export interface ServiceRef {
  readonly name: string;
  readonly namespace: string;
}

/** Agent to server. */
export type AgentMessage =
  | { readonly type: 'hello'; readonly nodeName: string; readonly address: string; readonly services: readonly ServiceRef[]; readonly version: string }
  | { readonly type: 'sign'; readonly id: number; readonly kind: 'workload' | 'node'; readonly service?: ServiceRef; readonly csr: string }
  | { readonly type: 'report'; readonly certificates: readonly { spiffeId: string; serial: string; notAfter: string }[] };

/** Server to agent. */
export type ServerMessage =
  | { readonly type: 'welcome'; readonly trustDomain: string; readonly roots: readonly string[]; readonly agentId: string }
  | { readonly type: 'signed'; readonly id: number; readonly cert: string }
  | { readonly type: 'error'; readonly id?: number; readonly code: string; readonly message: string };

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
        services: o.services.map((s, i) => service(s, `hello.services[${i}]`)),
        version: typeof o.version === 'string' ? o.version : 'unknown',
      };
    }
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
    default:
      throw bad(`unknown message type ${JSON.stringify(o.type)} (expected hello, sign or report)`);
  }
}

/** Checks a message from the server. @throws MeshError MESH_ERR_BAD_REQUEST */
export function parseServerMessage(text: string): ServerMessage {
  const o = obj(parseJson(text, 'message'), 'message');
  switch (o.type) {
    case 'welcome':
      if (!Array.isArray(o.roots) || !o.roots.every((r) => typeof r === 'string')) throw bad('welcome.roots must be a list of PEM strings');
      return { type: 'welcome', trustDomain: str(o, 'trustDomain', 'welcome'), roots: o.roots as string[], agentId: str(o, 'agentId', 'welcome') };
    case 'signed':
      if (!Number.isInteger(o.id)) throw bad('signed.id must be an integer');
      return { type: 'signed', id: o.id as number, cert: str(o, 'cert', 'signed') };
    case 'error':
      return { type: 'error', ...(Number.isInteger(o.id) ? { id: o.id as number } : {}), code: str(o, 'code', 'error'), message: str(o, 'message', 'error') };
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
