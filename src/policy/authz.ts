// Authorization decisions with Istio's semantics: which AuthorizationPolicies apply to a workload, and what they say of one request.
//
// The order, as Istio's:
//   1. a DENY rule that matches denies;
//   2. else, if no ALLOW policy applies to the workload, the request is allowed;
//   3. else an ALLOW rule must match, or the request is denied.
// AUDIT rules never change the decision; they mark the request to be logged. Policies annotated
// `istio.io/dry-run: "true"` are evaluated apart ("would deny") and never enforced. On TCP (no HTTP
// attributes) a rule with an HTTP-only field never matches for ALLOW, and for DENY and AUDIT its
// HTTP-only fields count as matched (Istio: "missing attributes are treated as matches" for DENY).

import type { AuthorizationPolicy, AuthzAction } from './authorization-policy';
import { compileRule, type AuthzRequest, type CompiledRule } from './authz-match';
import type { PolicyDocument } from './documents';
import { ROOT_NAMESPACE, selectorMatches, workloadKey, type Workload } from './workload';

/** The annotation that makes a policy dry-run: evaluated and logged, never enforced. */
export const DRY_RUN_ANNOTATION = 'istio.io/dry-run';

/** A rule of a policy, as decisions and logs name it: policy "namespace/name" and the rule's index in `rules`. */
export interface RuleRef {
  readonly policy: string;
  readonly rule: number;
}

/** Why a request is allowed or denied. */
export type AuthzReason =
  /** A DENY rule matched (`policy`, `rule`). */
  | 'denied-by-rule'
  /** ALLOW policies apply and none of their rules matched (`allowPolicies` lists them). */
  | 'no-allow-match'
  /** An ALLOW rule matched (`policy`, `rule`). */
  | 'allowed-by-rule'
  /** No ALLOW policy applies and no DENY rule matched. */
  | 'no-allow-policy';

/** What authorization says of one request or connection. */
export interface AuthzDecision {
  readonly allowed: boolean;
  readonly reason: AuthzReason;
  /** The deciding rule, for `denied-by-rule` and `allowed-by-rule`. */
  readonly by?: RuleRef;
  /** The ALLOW policies in force for the workload ("namespace/name"). */
  readonly allowPolicies: readonly string[];
  /** AUDIT rules that matched (one per policy). */
  readonly audit: readonly RuleRef[];
  /** What the dry-run policies alone would decide, when the workload has any. */
  readonly dryRun?: AuthzDecision;
}

interface CompiledPolicy {
  readonly ref: string;
  readonly action: AuthzAction;
  readonly dryRun: boolean;
  readonly namespace: string;
  readonly selector?: { readonly matchLabels: Readonly<Record<string, string>> };
  /** undefined: `rules` absent, which matches nothing. */
  readonly rules?: readonly CompiledRule[];
}

/** The first rule of `p` matching `req`, or -1. ALLOW rules with HTTP-only fields never match TCP. */
function firstMatch(p: CompiledPolicy, req: AuthzRequest): number {
  const rules = p.rules ?? [];
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i]!;
    if (req.http === undefined && r.httpOnly && p.action === 'ALLOW') continue;
    if (r.matches(req)) return i;
  }
  return -1;
}

/** DENY, then ALLOW, over one set of policies (the enforced ones, or the dry-run ones). */
function decide(deny: readonly CompiledPolicy[], allow: readonly CompiledPolicy[], req: AuthzRequest, audit: readonly RuleRef[]): AuthzDecision {
  const allowPolicies = allow.map((p) => p.ref);
  for (const p of deny) {
    const i = firstMatch(p, req);
    if (i >= 0) return { allowed: false, reason: 'denied-by-rule', by: { policy: p.ref, rule: i }, allowPolicies, audit };
  }
  if (allow.length === 0) return { allowed: true, reason: 'no-allow-policy', allowPolicies, audit };
  for (const p of allow) {
    const i = firstMatch(p, req);
    if (i >= 0) return { allowed: true, reason: 'allowed-by-rule', by: { policy: p.ref, rule: i }, allowPolicies, audit };
  }
  return { allowed: false, reason: 'no-allow-match', allowPolicies, audit };
}

/** The AuthorizationPolicies that apply to one workload, ready to decide its requests. */
export class WorkloadAuthorization {
  private readonly deny: readonly CompiledPolicy[];
  private readonly allow: readonly CompiledPolicy[];
  private readonly audits: readonly CompiledPolicy[];
  private readonly dryDeny: readonly CompiledPolicy[];
  private readonly dryAllow: readonly CompiledPolicy[];
  /** No policy applies: every request is allowed, nothing to log. */
  readonly empty: boolean;

  constructor(policies: readonly CompiledPolicy[]) {
    const pick = (action: AuthzAction, dryRun: boolean): CompiledPolicy[] => policies.filter((p) => p.action === action && p.dryRun === dryRun);
    this.deny = pick('DENY', false);
    this.allow = pick('ALLOW', false);
    // AUDIT only marks requests for logging, so a dry-run AUDIT policy does the same as an enforced one.
    this.audits = policies.filter((p) => p.action === 'AUDIT');
    this.dryDeny = pick('DENY', true);
    this.dryAllow = pick('ALLOW', true);
    this.empty = policies.length === 0;
  }

  /** The policies in force, "namespace/name" each, for `explain` and logs. */
  get policies(): { readonly deny: readonly string[]; readonly allow: readonly string[]; readonly audit: readonly string[]; readonly dryRun: readonly string[] } {
    const refs = (l: readonly CompiledPolicy[]): string[] => l.map((p) => p.ref);
    return { deny: refs(this.deny), allow: refs(this.allow), audit: refs(this.audits), dryRun: refs([...this.dryDeny, ...this.dryAllow]) };
  }

  /** Decides one request (or, without `http`, one TCP connection). */
  evaluate(req: AuthzRequest): AuthzDecision {
    if (this.empty) return NO_POLICY;
    const audit: RuleRef[] = [];
    for (const p of this.audits) {
      const i = firstMatch(p, req);
      if (i >= 0) audit.push({ policy: p.ref, rule: i });
    }
    const decision = decide(this.deny, this.allow, req, audit);
    if (this.dryDeny.length === 0 && this.dryAllow.length === 0) return decision;
    return { ...decision, dryRun: decide(this.dryDeny, this.dryAllow, req, []) };
  }
}

const NO_POLICY: AuthzDecision = Object.freeze({ allowed: true, reason: 'no-allow-policy', allowPolicies: Object.freeze([]), audit: Object.freeze([]) });

/** Every AuthorizationPolicy of a policy snapshot, compiled once; per workload, the ones that apply. */
export class AuthorizationIndex {
  private readonly policies: readonly CompiledPolicy[];
  private readonly byKey = new Map<string, WorkloadAuthorization>();
  private readonly byWorkload = new WeakMap<Workload, WorkloadAuthorization>();

  constructor(documents: readonly PolicyDocument[]) {
    this.policies = documents
      .filter((d): d is AuthorizationPolicy => d.kind === 'AuthorizationPolicy')
      .map((d) => ({
        ref: `${d.metadata.namespace}/${d.metadata.name}`,
        action: d.spec.action,
        dryRun: d.metadata.annotations[DRY_RUN_ANNOTATION] === 'true',
        namespace: d.metadata.namespace,
        ...(d.spec.selector ? { selector: d.spec.selector } : {}),
        ...(d.spec.rules ? { rules: d.spec.rules.map(compileRule) } : {}),
      }))
      // A stable order, so the deciding policy is the same whatever order the documents came in.
      .sort((a, b) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0));
  }

  /** The policies that apply to `w`: those of its namespace and of the root namespace whose selector (if any) matches. */
  forWorkload(w: Workload): WorkloadAuthorization {
    let found = this.byWorkload.get(w);
    if (found) return found;
    const key = workloadKey(w);
    found = this.byKey.get(key);
    if (!found) {
      found = new WorkloadAuthorization(this.policies.filter((p) => (p.namespace === w.namespace || p.namespace === ROOT_NAMESPACE) && selectorMatches(p.selector, w.labels)));
      if (this.byKey.size < 4096) this.byKey.set(key, found);
    }
    this.byWorkload.set(w, found);
    return found;
  }
}

/**
 * The text a denied caller and the log get: `RBAC: access denied by AuthorizationPolicy default/deny-admin rule 0`,
 * or, when ALLOW policies apply and none matched, `RBAC: access denied: no rule of AuthorizationPolicy
 * default/allow-web allows it`.
 */
export function describeDenial(d: AuthzDecision): string {
  if (d.reason === 'denied-by-rule') return `RBAC: access denied by AuthorizationPolicy ${d.by!.policy} rule ${d.by!.rule}`;
  const n = d.allowPolicies.length;
  return `RBAC: access denied: no rule of AuthorizationPolic${n > 1 ? 'ies' : 'y'} ${d.allowPolicies.join(', ')} allows it`;
}

/** The trust-domain-relative principal and the namespace of a workload SPIFFE ID such as `spiffe://mesh.local/ns/a/sa/b`. */
export function principalOf(spiffeId: string): { principal: string; namespace?: string } {
  const principal = spiffeId.startsWith('spiffe://') ? spiffeId.slice(9) : spiffeId;
  const m = /\/ns\/([^/]+)\//.exec(principal);
  return m ? { principal, namespace: m[1]! } : { principal };
}
