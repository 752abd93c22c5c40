// What the mesh would do with one request from one service to another, computed with the code the agents run:
// route match (matchRoute), destinations and subsets, timeouts/retries/faults, the mTLS mode and the authorization
// decision (the inbound side's evaluation). `mesh-agent explain` prints it.

import type { CompiledPolicy } from './compile';
import { describeDenial, type AuthzDecision } from './authz';
import { ownSubsetPolicy } from './destination-policy';
import type { ServiceRef } from './hosts';
import { matchRoute, type RouteRequest } from './route-match';
import { workloadOf } from './workload';

/** The request to explain. Without `method`, it is a TCP connection (no route table, L4 authorization). */
export interface ExplainQuery {
  readonly from: ServiceRef;
  /** The calling workload's labels besides `app` (for sourceLabels). */
  readonly fromLabels?: Readonly<Record<string, string>>;
  readonly to: ServiceRef;
  readonly toLabels?: Readonly<Record<string, string>>;
  /** The port the destination app listens on (PeerAuthentication port settings, AuthorizationPolicy ports). @default 0 */
  readonly port?: number;
  readonly method?: string;
  readonly path?: string;
  /** Lower-case names. */
  readonly headers?: Readonly<Record<string, string>>;
  /** The caller's trust domain, for its principal. @default "mesh.local" */
  readonly trustDomain?: string;
}

export interface ExplainDestination {
  readonly service: string;
  readonly subset: string | null;
  readonly weight: number;
  /** Labels an endpoint needs to be in the subset. */
  readonly subsetLabels: Readonly<Record<string, string>> | null;
  /** True when the subset has its own trafficPolicy (its own cluster). */
  readonly ownPolicy: boolean;
  readonly loadBalancer: string;
}

export interface ExplainResult {
  readonly request: { readonly from: string; readonly to: string; readonly protocol: 'http' | 'tcp'; readonly method?: string; readonly path?: string; readonly port: number };
  readonly route: {
    /** "VirtualService api.default" or "default" (no VirtualService: Istio's default route). */
    readonly source: string;
    readonly rule: number | null;
    readonly name: string | null;
    readonly action: 'route' | 'redirect' | 'directResponse' | 'no-route';
    readonly destinations: readonly ExplainDestination[];
    readonly timeoutMs: number;
    readonly retries: { readonly attempts: number; readonly perTryTimeoutMs: number; readonly retryOn: readonly string[] };
    readonly fault: { readonly delay?: { readonly percent: number; readonly ms: number }; readonly abort?: { readonly percent: number; readonly httpStatus?: number; readonly grpcStatus?: number } } | null;
    readonly detail?: string;
  };
  readonly mtls: { readonly mode: string; readonly source: string };
  readonly authorization: { readonly allowed: boolean; readonly reason: string; readonly by: string | null; readonly message: string | null; readonly audit: readonly string[]; readonly dryRun: { readonly allowed: boolean; readonly by: string | null } | null };
}

const ref = (s: ServiceRef): string => `${s.name}.${s.namespace}`;

/** Explains one request (or TCP connection) with `policy`; every part comes from the functions the proxy calls. */
export function explainRequest(policy: CompiledPolicy, q: ExplainQuery): ExplainResult {
  const http = q.method !== undefined;
  const port = q.port ?? 0;
  const headers = q.headers ?? {};
  const req: RouteRequest = {
    method: q.method ?? 'GET',
    path: q.path ?? '/',
    authority: headers.host ?? q.to.name,
    header: (n) => headers[n],
    port,
    sourceLabels: { app: q.from.name, ...q.fromLabels },
  };
  const route = http ? explainRoute(policy, q.to, req) : explainTcp(policy, q.to);
  const workload = workloadOf(q.to.name, q.to.namespace, q.toLabels ?? {});
  const mode = policy.mtlsModeFor(workload, port);
  const td = q.trustDomain ?? 'mesh.local';
  const decision = policy.authorizationFor(workload).evaluate({
    principal: `${td}/ns/${q.from.namespace}/sa/${q.from.name}`,
    namespace: q.from.namespace,
    destinationPort: port,
    ...(http ? { http: { method: req.method, path: req.path, host: req.authority, header: (n: string) => headers[n] } } : {}),
  });
  return {
    request: { from: ref(q.from), to: ref(q.to), protocol: http ? 'http' : 'tcp', ...(http ? { method: req.method, path: req.path } : {}), port },
    route,
    mtls: { mode: mode.mode, source: mode.source },
    authorization: authorizationOf(decision),
  };
}

function authorizationOf(d: AuthzDecision): ExplainResult['authorization'] {
  const by = d.by ? `${d.by.policy} rule ${d.by.rule}` : null;
  return {
    allowed: d.allowed,
    reason: d.reason,
    by,
    message: d.allowed ? null : describeDenial(d),
    audit: d.audit.map((a) => `${a.policy} rule ${a.rule}`),
    dryRun: d.dryRun ? { allowed: d.dryRun.allowed, by: d.dryRun.by ? `${d.dryRun.by.policy} rule ${d.dryRun.by.rule}` : null } : null,
  };
}

function destinationsOf(policy: CompiledPolicy, list: readonly { service: ServiceRef; subset?: string; weight: number }[]): ExplainDestination[] {
  return list.map((d) => {
    const dp = policy.destinationFor(d.service);
    const own = ownSubsetPolicy(dp, d.subset);
    const lb = (own ?? dp.trafficPolicy).loadBalancer;
    return {
      service: ref(d.service),
      subset: d.subset ?? null,
      weight: d.weight,
      subsetLabels: d.subset ? (dp.subsets.get(d.subset)?.labels ?? null) : null,
      ownPolicy: own !== undefined,
      loadBalancer: lb.kind,
    };
  });
}

function explainRoute(policy: CompiledPolicy, to: ServiceRef, req: RouteRequest): ExplainResult['route'] {
  const table = policy.routesFor(to);
  const m = matchRoute(table, req);
  const none = { attempts: 0, perTryTimeoutMs: 0, retryOn: [] as string[] };
  if (!m) return { source: table.source ?? 'default', rule: null, name: null, action: 'no-route', destinations: [], timeoutMs: 0, retries: none, fault: null, detail: 'no http[] rule matches: the caller gets 404 with flag NR' };
  const a = m.action;
  const fault = m.fault
    ? {
        ...(m.fault.delay ? { delay: { percent: m.fault.delay.fraction * 100, ms: m.fault.delay.ms } } : {}),
        ...(m.fault.abort ? { abort: { percent: m.fault.abort.fraction * 100, ...(m.fault.abort.httpStatus !== undefined ? { httpStatus: m.fault.abort.httpStatus } : {}), ...(m.fault.abort.grpcStatus !== undefined ? { grpcStatus: m.fault.abort.grpcStatus } : {}) } } : {}),
      }
    : null;
  const base = {
    source: m.source,
    rule: m.ruleIndex >= 0 ? m.ruleIndex : null,
    name: m.name ?? null,
    timeoutMs: m.timeoutMs,
    retries: { attempts: m.retries.attempts, perTryTimeoutMs: m.retries.perTryTimeoutMs, retryOn: [...m.retries.retryOn] },
    fault,
  };
  if (a.kind === 'redirect') return { ...base, action: 'redirect', destinations: [], detail: `${a.code} to ${a.authority ?? '(same host)'}${a.uri ?? '(same path)'}` };
  if (a.kind === 'directResponse') return { ...base, action: 'directResponse', destinations: [], detail: `${a.status}${a.body ? ` "${a.body}"` : ''}` };
  return { ...base, action: 'route', destinations: destinationsOf(policy, a.destinations) };
}

function explainTcp(policy: CompiledPolicy, to: ServiceRef): ExplainResult['route'] {
  const table = policy.tcpRoutesFor(to);
  const first = table.entries[0]?.route;
  const none = { attempts: 0, perTryTimeoutMs: 0, retryOn: [] as string[] };
  if (!first) return { source: 'default', rule: null, name: null, action: 'no-route', destinations: [], timeoutMs: 0, retries: none, fault: null };
  return {
    source: first.source,
    rule: first.ruleIndex >= 0 ? first.ruleIndex : null,
    name: null,
    action: 'route',
    destinations: destinationsOf(policy, first.destinations),
    timeoutMs: 0,
    retries: none,
    fault: null,
    ...(table.entries.length > 1 ? { detail: 'the first tcp[] rule is shown; rules with a match depend on the caller\'s labels and port' } : {}),
  };
}
