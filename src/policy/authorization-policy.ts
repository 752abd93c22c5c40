// AuthorizationPolicy: who may call what on the selected workloads (ALLOW / DENY / AUDIT rules of from, to and when).

import { isIP } from 'node:net';
import type { FieldReader } from '../config';
import { readStringList, rejectUnimplemented } from './fields';
import { readSelector } from './peer-authentication';
import type { PolicyResource } from './resource';

export const AUTHZ_ACTIONS = ['ALLOW', 'DENY', 'AUDIT'] as const;
export type AuthzAction = (typeof AUTHZ_ACTIONS)[number];

/** `from[].source`: each list empty = not constrained. Strings support exact, `prefix*`, `*suffix` and `*`. */
export interface AuthzSource {
  readonly principals: readonly string[];
  readonly notPrincipals: readonly string[];
  readonly requestPrincipals: readonly string[];
  readonly notRequestPrincipals: readonly string[];
  readonly namespaces: readonly string[];
  readonly notNamespaces: readonly string[];
  readonly ipBlocks: readonly string[];
  readonly notIpBlocks: readonly string[];
  readonly remoteIpBlocks: readonly string[];
  readonly notRemoteIpBlocks: readonly string[];
}

/** `to[].operation`. Ports are numbers. */
export interface AuthzOperation {
  readonly hosts: readonly string[];
  readonly notHosts: readonly string[];
  readonly ports: readonly number[];
  readonly notPorts: readonly number[];
  readonly methods: readonly string[];
  readonly notMethods: readonly string[];
  readonly paths: readonly string[];
  readonly notPaths: readonly string[];
}

/** `when[]` condition on a request attribute such as `request.headers[x-user]` or `source.namespace`. */
export interface AuthzCondition {
  readonly key: string;
  readonly values: readonly string[];
  readonly notValues: readonly string[];
}

export interface AuthzRule {
  readonly from: readonly AuthzSource[];
  readonly to: readonly AuthzOperation[];
  readonly when: readonly AuthzCondition[];
}

/** An AuthorizationPolicy's spec. `rules` absent (undefined) with ALLOW allows nothing; `[{}]` allows everything. */
export interface AuthorizationPolicySpec {
  readonly selector?: { readonly matchLabels: Readonly<Record<string, string>> };
  /** @default "ALLOW" */
  readonly action: AuthzAction;
  readonly rules?: readonly AuthzRule[];
}

/** A validated AuthorizationPolicy document. */
export type AuthorizationPolicy = PolicyResource<'AuthorizationPolicy', AuthorizationPolicySpec>;

const SOURCE_FIELDS = ['principals', 'notPrincipals', 'requestPrincipals', 'notRequestPrincipals', 'namespaces', 'notNamespaces', 'ipBlocks', 'notIpBlocks', 'remoteIpBlocks', 'notRemoteIpBlocks'] as const;
const IP_FIELDS = new Set(['ipBlocks', 'notIpBlocks', 'remoteIpBlocks', 'notRemoteIpBlocks']);
const WHEN_KEYS = /^(request\.headers\[[^\]]+\]|source\.ip|remote\.ip|source\.namespace|source\.principal|destination\.ip|destination\.port|connection\.sni)$/;
const IP_KEYS = new Set(['source.ip', 'remote.ip', 'destination.ip']);
const isPort = (p: string): boolean => /^\d{1,5}$/.test(p) && Number(p) >= 1 && Number(p) <= 65535;
const WHEN_HINT = 'request.headers[<name>], source.ip, remote.ip, source.namespace, source.principal, destination.ip, destination.port or connection.sni';

/** True for "10.0.0.1" and "10.0.0.0/8" (IPv4 or IPv6). */
export function isIpBlock(s: string): boolean {
  const slash = s.indexOf('/');
  if (slash < 0) return isIP(s) !== 0;
  const family = isIP(s.slice(0, slash));
  const bits = s.slice(slash + 1);
  return family !== 0 && /^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128);
}

function readPatterns(r: FieldReader, key: string): string[] {
  const list = readStringList(r, key);
  list.forEach((s, i) => {
    const inner = s.slice(1, -1);
    if (s === '' || (s.length > 1 && inner.includes('*')) || (s.startsWith('*') && s.endsWith('*') && s.length > 1)) {
      r.problems.add([...r.path, key, i], `got ${JSON.stringify(s)}, expected an exact value, "prefix*", "*suffix" or "*"`);
    }
  });
  return list;
}

function readSource(r: FieldReader): AuthzSource {
  const out = {} as Record<(typeof SOURCE_FIELDS)[number], string[]>;
  for (const f of SOURCE_FIELDS) {
    out[f] = readPatterns(r, f);
    if (IP_FIELDS.has(f)) out[f].forEach((b, i) => { if (!isIpBlock(b)) r.problems.add([...r.path, f, i], `got ${JSON.stringify(b)}, expected an IP address or CIDR block such as "10.0.0.0/8"`); });
  }
  if (SOURCE_FIELDS.every((f) => !r.has(f))) r.problems.add(r.path, `must set at least one of ${SOURCE_FIELDS.join(', ')}`);
  r.done();
  return out;
}

function readPorts(r: FieldReader, key: string): number[] {
  return readStringList(r, key).flatMap((p, i) => {
    if (isPort(p)) return [Number(p)];
    r.problems.add([...r.path, key, i], `got ${JSON.stringify(p)}, expected a port number from 1 to 65535`);
    return [];
  });
}

function readOperation(r: FieldReader): AuthzOperation {
  const op: AuthzOperation = {
    hosts: readPatterns(r, 'hosts'), notHosts: readPatterns(r, 'notHosts'),
    ports: readPorts(r, 'ports'), notPorts: readPorts(r, 'notPorts'),
    methods: readPatterns(r, 'methods'), notMethods: readPatterns(r, 'notMethods'),
    paths: readPatterns(r, 'paths'), notPaths: readPatterns(r, 'notPaths'),
  };
  if (Object.keys(op).every((k) => !r.has(k))) r.problems.add(r.path, 'must set at least one of hosts, notHosts, ports, notPorts, methods, notMethods, paths, notPaths');
  r.done();
  return op;
}

function readCondition(r: FieldReader): AuthzCondition {
  const key = r.string('key', '', { required: true });
  if (key.startsWith('request.auth.')) r.fail('key', `${key} needs request authentication (JWT), which mesh-agent does not implement yet`);
  else if (key && !WHEN_KEYS.test(key)) r.fail('key', `got ${JSON.stringify(key)}, expected one of ${WHEN_HINT}`);
  const values = readPatterns(r, 'values');
  const notValues = readPatterns(r, 'notValues');
  if (!r.has('values') && !r.has('notValues')) r.problems.add(r.path, 'must set values and/or notValues');
  const check = IP_KEYS.has(key) ? isIpBlock : key === 'destination.port' ? isPort : undefined;
  const expected = IP_KEYS.has(key) ? 'an IP address or CIDR block such as "10.0.0.0/8"' : 'a port number from 1 to 65535';
  for (const [list, name] of [[values, 'values'], [notValues, 'notValues']] as const) {
    list.forEach((v, i) => {
      if (check && !check(v)) r.problems.add([...r.path, name, i], `got ${JSON.stringify(v)}, expected ${expected} for ${key}`);
    });
  }
  r.done();
  return { key, values, notValues };
}

function readRule(r: FieldReader): AuthzRule {
  const from = r.list('from').map((f) => {
    if (!f.has('source')) f.fail('source', 'is required (from: [{source: {...}}])');
    const s = readSource(f.object('source'));
    f.done();
    return s;
  });
  const to = r.list('to').map((t) => {
    if (!t.has('operation')) t.fail('operation', 'is required (to: [{operation: {...}}])');
    const o = readOperation(t.object('operation'));
    t.done();
    return o;
  });
  const when = r.list('when').map(readCondition);
  r.done();
  return { from, to, when };
}

/** Reads and checks an AuthorizationPolicy spec. */
export function readAuthorizationPolicySpec(r: FieldReader): AuthorizationPolicySpec {
  const selector = readSelector(r);
  let action: AuthzAction = 'ALLOW';
  if (r.raw('action') === 'CUSTOM') r.fail('action', 'CUSTOM (external authorization) is not supported by mesh-agent; use ALLOW, DENY or AUDIT');
  else action = r.oneOf('action', AUTHZ_ACTIONS, 'ALLOW');
  const rules = r.has('rules') ? r.list('rules').map(readRule) : undefined;
  rejectUnimplemented(r, ['provider', 'targetRef', 'targetRefs']);
  r.done();
  return { ...(selector ? { selector } : {}), action, ...(rules ? { rules } : {}) };
}
