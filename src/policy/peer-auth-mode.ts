// The mTLS mode in force on a workload's port, from PeerAuthentication: port level > workload > namespace > mesh > STRICT.

import type { PeerAuthentication } from './peer-authentication';
import type { PolicyDocument } from './documents';
import { ROOT_NAMESPACE, selectorMatches, workloadKey, type Workload } from './workload';

/** What inbound traffic to a port may look like. STRICT: mTLS only; PERMISSIVE: mTLS or plaintext; DISABLE: plaintext only. */
export type EffectiveMtlsMode = 'STRICT' | 'PERMISSIVE' | 'DISABLE';

/** The mode of one workload port, and what set it. */
export interface MtlsModeDecision {
  readonly mode: EffectiveMtlsMode;
  /** "PeerAuthentication shop/reviews port 9090", "PeerAuthentication mesh-system/default", or "default (no PeerAuthentication)". */
  readonly source: string;
}

/** mesh-agent's mode when no PeerAuthentication sets one. */
export const DEFAULT_MTLS_MODE: EffectiveMtlsMode = 'STRICT';

const DEFAULT: MtlsModeDecision = Object.freeze({ mode: DEFAULT_MTLS_MODE, source: 'default (no PeerAuthentication)' });

/** True when the mode takes plaintext connections. */
export function acceptsPlaintext(mode: EffectiveMtlsMode): boolean {
  return mode !== 'STRICT';
}

/** True when the mode takes mTLS connections. */
export function acceptsMtls(mode: EffectiveMtlsMode): boolean {
  return mode !== 'DISABLE';
}

const ref = (p: PeerAuthentication): string => `${p.metadata.namespace}/${p.metadata.name}`;

/** Every PeerAuthentication of a snapshot; per workload port, the mode that applies. */
export class PeerAuthenticationIndex {
  private readonly byNamespace = new Map<string, { wide?: PeerAuthentication; selecting: PeerAuthentication[] }>();
  private readonly cache = new Map<string, MtlsModeDecision>();
  private readonly byWorkload = new WeakMap<Workload, Map<number, MtlsModeDecision>>();

  constructor(documents: readonly PolicyDocument[]) {
    const sorted = documents.filter((d): d is PeerAuthentication => d.kind === 'PeerAuthentication').sort((a, b) => (ref(a) < ref(b) ? -1 : 1));
    for (const p of sorted) {
      let ns = this.byNamespace.get(p.metadata.namespace);
      if (!ns) this.byNamespace.set(p.metadata.namespace, (ns = { selecting: [] }));
      // Two namespace-wide policies in one namespace are refused as a conflict before they get here.
      if (!p.spec.selector) ns.wide ??= p;
      else ns.selecting.push(p);
    }
  }

  /**
   * The mode of `port` (where the workload's app listens) on `w`. The narrowest scope that sets a mode wins: the
   * port in the workload's own policy (first by name when several select it), then that policy's mode, then its
   * namespace's policy, then the mesh's (root namespace, no selector), then STRICT. UNSET defers to the next.
   */
  modeFor(w: Workload, port: number): MtlsModeDecision {
    // Asked per request: workloads the agent holds are looked up by identity, others by their labels.
    let ports = this.byWorkload.get(w);
    if (!ports) this.byWorkload.set(w, (ports = new Map()));
    let found = ports.get(port);
    if (!found) {
      const key = `${workloadKey(w)}|${port}`;
      found = this.cache.get(key) ?? this.resolve(w, port);
      if (this.cache.size < 4096) this.cache.set(key, found);
      ports.set(port, found);
    }
    return found;
  }

  private resolve(w: Workload, port: number): MtlsModeDecision {
    const ns = this.byNamespace.get(w.namespace);
    const own = ns?.selecting.find((p) => selectorMatches(p.spec.selector, w.labels));
    if (own) {
      const atPort = own.spec.portLevelMtls[port];
      if (atPort && atPort !== 'UNSET') return { mode: atPort, source: `PeerAuthentication ${ref(own)} port ${port}` };
      if (own.spec.mtlsMode !== 'UNSET') return { mode: own.spec.mtlsMode, source: `PeerAuthentication ${ref(own)}` };
    }
    for (const p of [ns?.wide, this.byNamespace.get(ROOT_NAMESPACE)?.wide]) {
      if (p && p.spec.mtlsMode !== 'UNSET') return { mode: p.spec.mtlsMode, source: `PeerAuthentication ${ref(p)}` };
    }
    return DEFAULT;
  }
}
