// PeerAuthentication: what inbound traffic to the selected workloads must look like (mTLS mode, per port).

import type { FieldReader } from '../config';
import { readStringMap, rejectUnimplemented } from './fields';
import type { PolicyResource } from './resource';

export const MTLS_MODES = ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'] as const;
export type MtlsMode = (typeof MTLS_MODES)[number];

/** A PeerAuthentication's spec. No selector: the whole namespace (the whole mesh in the root namespace). */
export interface PeerAuthenticationSpec {
  readonly selector?: { readonly matchLabels: Readonly<Record<string, string>> };
  /** @default "UNSET" (inherit from the wider scope) */
  readonly mtlsMode: MtlsMode;
  /** Port number -> mode, for the selected workloads only. */
  readonly portLevelMtls: Readonly<Record<number, MtlsMode>>;
}

/** A validated PeerAuthentication document. */
export type PeerAuthentication = PolicyResource<'PeerAuthentication', PeerAuthenticationSpec>;

/** Reads `selector {matchLabels}` (shared with AuthorizationPolicy); undefined when absent. */
export function readSelector(r: FieldReader): { matchLabels: Record<string, string> } | undefined {
  if (!r.has('selector')) return undefined;
  const s = r.object('selector');
  const matchLabels = readStringMap(s, 'matchLabels');
  if (Object.keys(matchLabels).length === 0) s.fail('matchLabels', 'is required and must not be empty (leave selector out to select the whole namespace)');
  s.done();
  return { matchLabels };
}

/** Reads and checks a PeerAuthentication spec. */
export function readPeerAuthenticationSpec(r: FieldReader): PeerAuthenticationSpec {
  const selector = readSelector(r);
  let mtlsMode: MtlsMode = 'UNSET';
  if (r.has('mtls')) {
    const m = r.object('mtls');
    mtlsMode = m.oneOf('mode', MTLS_MODES, 'UNSET');
    m.done();
  }
  const portLevelMtls: Record<number, MtlsMode> = {};
  const raw = r.raw('portLevelMtls');
  if (raw !== undefined && raw !== null) {
    const p = r.object('portLevelMtls');
    if (!selector) r.fail('portLevelMtls', 'needs a selector (port-level modes apply to selected workloads only)');
    for (const key of Object.keys(typeof raw === 'object' && !Array.isArray(raw) ? raw : {})) {
      const port = Number(key);
      const entry = p.object(key);
      if (!/^\d+$/.test(key) || port < 1 || port > 65535) p.fail(key, `got ${JSON.stringify(key)}, expected a port number from 1 to 65535`);
      if (!entry.has('mode')) entry.fail('mode', `is required (one of ${MTLS_MODES.join(', ')})`);
      portLevelMtls[port] = entry.oneOf('mode', MTLS_MODES, 'UNSET');
      entry.done();
    }
    p.done();
  }
  rejectUnimplemented(r, ['targetRef', 'targetRefs']);
  r.done();
  return { ...(selector ? { selector } : {}), mtlsMode, portLevelMtls };
}
