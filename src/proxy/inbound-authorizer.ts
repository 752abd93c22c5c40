// Inbound admission: the mTLS mode and the AuthorizationPolicies for each connection and request, their log lines, and
// the re-check of open connections when the policy changes.

import type { IncomingHttpHeaders } from 'node:http2';
import {
  acceptsMtls,
  acceptsPlaintext,
  describeDenial,
  formatServiceRef,
  type AuthzDecision,
  type AuthzHttp,
  type AuthzRequest,
  type CompiledPolicy,
  type EffectiveMtlsMode,
  type MtlsModeDecision,
} from '../policy';
import type { LogFields, Logger } from '../telemetry';
import { headerValue, type HttpHead } from './http1/http1-head';
import type { InboundRoute } from './proxy-config';

/** What is known of an inbound connection before any request: how it came, and from whom. */
export interface ConnectionFacts {
  /** mTLS (true) or plaintext. */
  readonly tls: boolean;
  /** The caller's trust-domain-relative SPIFFE ID and its namespace (mTLS only). */
  readonly principal?: string;
  readonly namespace?: string;
  readonly sourceIp?: string;
  readonly sourcePort?: number;
  readonly destinationIp?: string;
  readonly sni?: string;
}

/** The answer for one connection or request. A refusal carries the text the caller gets. */
export type Admission =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly why: 'mtls-mode'; readonly message: string }
  | { readonly allowed: false; readonly why: 'authz'; readonly message: string; readonly decision: AuthzDecision };

/** An open connection the authorizer checks again when the policy changes. */
export interface OpenConnection {
  readonly facts: ConnectionFacts;
  /**
   * What to check now: its service and, for an upgraded HTTP connection, the request that opened the tunnel. An HTTP
   * connection between requests answers `modeOnly`: only its mTLS mode is checked (its next request is admitted anyway).
   */
  current(): { readonly route: InboundRoute; readonly http?: AuthzHttp; readonly modeOnly?: boolean } | undefined;
  close(): void;
}

/** The counters admission keeps (part of InboundStats). */
export interface AdmissionStats {
  /** Connections, requests and streams denied by AuthorizationPolicy. */
  authzDenied: number;
  /** Connections and requests refused because the service's mTLS mode does not take them (plaintext to STRICT, mTLS to DISABLE). */
  refusedMtlsMode: number;
  /** Open connections closed because a new policy denies them. */
  closedOnPolicyChange: number;
}

/** The response flag of an answer the agent makes for a refusal: Envoy's RBAC, and MTLS for the mTLS mode. */
export function refusalFlag(a: Exclude<Admission, { allowed: true }>): string {
  return a.why === 'authz' ? 'RBAC' : 'MTLS';
}

const ALLOWED: Admission = Object.freeze({ allowed: true });

/** The authorization attributes of an HTTP/1 request head. */
export function http1Attributes(head: HttpHead): AuthzHttp {
  return {
    method: head.method,
    path: head.target,
    host: headerValue(head, 'host') ?? '',
    header: (name) => {
      let out: string | undefined;
      const f = head.fields;
      for (let i = 0; i < f.length; i += 2) if (f[i]!.toLowerCase() === name) out = out === undefined ? f[i + 1]! : `${out},${f[i + 1]}`;
      return out;
    },
  };
}

/** The authorization attributes of an HTTP/2 request's headers. */
function h2Attributes(headers: IncomingHttpHeaders): AuthzHttp {
  const one = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v.join(',') : v);
  return {
    method: one(headers[':method']) ?? '',
    path: one(headers[':path']) ?? '',
    host: one(headers[':authority']) ?? one(headers.host) ?? '',
    header: (name) => one(headers[name]),
  };
}

export class InboundAuthorizer {
  private readonly open = new Set<OpenConnection>();

  constructor(
    private readonly policy: () => CompiledPolicy,
    private readonly stats: AdmissionStats,
    private readonly log: Logger,
  ) {}

  /** The mTLS mode of a local service (its app's port). */
  modeOf(route: InboundRoute): MtlsModeDecision {
    return this.policy().mtlsModeFor(route.workload, route.target.port);
  }

  /**
   * Admits a connection (no `http`) or one request to `route`: first the mTLS mode, then the AuthorizationPolicies.
   * Logs every refusal (warn), and the AUDIT matches and dry-run "would deny"s (info) unless `quiet`.
   */
  admit(route: InboundRoute, facts: ConnectionFacts, http?: AuthzHttp, quiet = false): Admission {
    const byMode = this.checkMode(route, facts, http);
    if (!byMode.allowed) return byMode;
    const authz = this.policy().authorizationFor(route.workload);
    if (authz.empty) return ALLOWED;
    const req: AuthzRequest = { ...facts, destinationPort: route.target.port, ...(http ? { http } : {}) };
    const d = authz.evaluate(req);
    if (!quiet) {
      for (const a of d.audit) this.log.info('authorization audit', { ...this.fields(route, facts, http), policy: a.policy, rule: a.rule, allowed: d.allowed });
      if (d.dryRun && !d.dryRun.allowed) this.log.info('authorization dry-run: would deny', { ...this.fields(route, facts, http), ...decisionFields(d.dryRun), dryRun: true });
    }
    if (d.allowed) return ALLOWED;
    this.stats.authzDenied++;
    const message = describeDenial(d);
    this.log.warn('authorization denied', { code: 'MESH_ERR_AUTHZ_DENIED', ...this.fields(route, facts, http), ...decisionFields(d) });
    return { allowed: false, why: 'authz', message, decision: d };
  }

  /** False when the service's mode takes this connection and no AuthorizationPolicy applies: nothing to check per request. */
  mustCheck(route: InboundRoute, facts: ConnectionFacts): boolean {
    const policy = this.policy();
    return !takes(policy.mtlsModeFor(route.workload, route.target.port).mode, facts) || !policy.authorizationFor(route.workload).empty;
  }

  /** Admits one HTTP/2 stream by its request headers. */
  admitStream(route: InboundRoute, facts: ConnectionFacts, headers: IncomingHttpHeaders): Admission {
    return this.mustCheck(route, facts) ? this.admit(route, facts, h2Attributes(headers)) : ALLOWED;
  }

  /** Whether the service's mTLS mode takes a connection that came this way (mTLS or plaintext); logs a refusal. */
  checkMode(route: InboundRoute, facts: ConnectionFacts, http?: AuthzHttp): Admission {
    const mode = this.modeOf(route);
    if (takes(mode.mode, facts)) return ALLOWED;
    this.stats.refusedMtlsMode++;
    const service = formatServiceRef(route.workload);
    const message = facts.tls
      ? `mTLS refused: service ${service} takes plaintext only (mTLS mode ${mode.mode}, from ${mode.source})`
      : `plaintext refused: service ${service} requires mutual TLS (mTLS mode ${mode.mode}, from ${mode.source})`;
    this.log.warn('inbound refused by mTLS mode', { code: 'MESH_ERR_MTLS_MODE', ...this.fields(route, facts, http), mode: mode.mode, modeSource: mode.source });
    return { allowed: false, why: 'mtls-mode', message };
  }

  /** Keeps `c` to check again on policy change, until `untrack`. */
  track(c: OpenConnection): void {
    this.open.add(c);
  }

  untrack(c: OpenConnection): void {
    this.open.delete(c);
  }

  /**
   * Tracks an HTTP/2 session (no `headers`: its mTLS mode is checked again) or one of its open streams (admitted again
   * by its request headers) until the returned function is called; `close` ends it when a new policy refuses it.
   */
  watchH2(route: InboundRoute, facts: ConnectionFacts, headers: IncomingHttpHeaders | undefined, close: () => void): () => void {
    const http = headers && h2Attributes(headers);
    const c: OpenConnection = { facts, current: () => (http ? { route, http } : { route, modeOnly: true }), close };
    this.open.add(c);
    return () => this.open.delete(c);
  }

  /** Checks every open connection against the policy now in force; closes those it refuses. Returns how many. */
  recheck(): number {
    let closed = 0;
    for (const c of [...this.open]) {
      const now = c.current();
      if (!now) continue;
      const a = now.modeOnly ? this.checkMode(now.route, c.facts) : this.admit(now.route, c.facts, now.http, true);
      if (a.allowed) continue;
      closed++;
      this.stats.closedOnPolicyChange++;
      this.log.warn('open connection closed: the new policy refuses it', { ...this.fields(now.route, c.facts, now.http), reason: a.message });
      this.open.delete(c);
      c.close();
    }
    return closed;
  }

  private fields(route: InboundRoute, facts: ConnectionFacts, http?: AuthzHttp): LogFields {
    return {
      service: formatServiceRef(route.workload),
      port: route.target.port,
      principal: facts.principal ?? 'none (plaintext)',
      source: facts.sourceIp && `${facts.sourceIp}:${facts.sourcePort ?? 0}`,
      ...(http ? { method: http.method, path: http.path } : { protocol: route.protocol }),
    };
  }
}

/** Whether a service in `mode` takes a connection that came as `facts` says (mTLS or plaintext). */
function takes(mode: EffectiveMtlsMode, facts: ConnectionFacts): boolean {
  return facts.tls ? acceptsMtls(mode) : acceptsPlaintext(mode);
}

/** The deciding policy and rule (or the ALLOW policies none of whose rules matched) as log fields. */
function decisionFields(d: AuthzDecision): LogFields {
  return d.by ? { policy: d.by.policy, rule: d.by.rule, reason: d.reason } : { policy: d.allowPolicies.join(','), reason: d.reason };
}
