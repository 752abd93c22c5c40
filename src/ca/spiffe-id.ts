// SPIFFE IDs parsed once at the edge: workload IDs in Istio's form, and the control plane's own IDs.

import { MeshError } from '../errors';

const SEGMENT = /^[A-Za-z0-9._-]+$/;
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
/** DNS-label-like service and namespace names, as Consul and Nomad allow them. */
export const NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** A parsed `spiffe://<trust-domain>/<path>` identity. */
export class SpiffeId {
  private constructor(
    readonly trustDomain: string,
    readonly path: string,
  ) {}

  /** @throws MeshError MESH_ERR_SPIFFE_ID when `uri` is not a valid SPIFFE ID. */
  static parse(uri: string): SpiffeId {
    const m = /^spiffe:\/\/([^/]+)(\/.*)?$/.exec(uri);
    if (!m || !TRUST_DOMAIN.test(m[1]!)) throw new MeshError('MESH_ERR_SPIFFE_ID', `not a SPIFFE ID: ${JSON.stringify(uri)} (expected spiffe://<trust-domain>/<path>)`);
    const path = m[2] ?? '';
    if (path !== '' && (path.endsWith('/') || !path.slice(1).split('/').every((s) => SEGMENT.test(s) && s !== '.' && s !== '..'))) {
      throw new MeshError('MESH_ERR_SPIFFE_ID', `bad path in SPIFFE ID ${JSON.stringify(uri)}: segments must be letters, digits, ".", "_" or "-"`);
    }
    return new SpiffeId(m[1]!, path);
  }

  /** The workload identity of a service: spiffe://<td>/ns/<namespace>/sa/<service>. */
  static workload(trustDomain: string, namespace: string, service: string): SpiffeId {
    return SpiffeId.parse(`spiffe://${trustDomain}/ns/${namespace}/sa/${service}`);
  }

  /** The identity of an enrolled agent's node certificate. */
  static agent(trustDomain: string, agentId: string): SpiffeId {
    return SpiffeId.parse(`spiffe://${trustDomain}/agent/${agentId}`);
  }

  /** The identity the control-plane server presents to agents. */
  static server(trustDomain: string): SpiffeId {
    return SpiffeId.parse(`spiffe://${trustDomain}/server`);
  }

  /** The identity whose key signs mesh policy versions (its certificate travels with each version). */
  static policySigner(trustDomain: string): SpiffeId {
    return SpiffeId.parse(`spiffe://${trustDomain}/server/policy`);
  }

  /** Namespace and service when this is a workload ID (`/ns/<ns>/sa/<sa>`), else undefined. */
  get workloadParts(): { namespace: string; service: string } | undefined {
    const m = /^\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(this.path);
    return m ? { namespace: m[1]!, service: m[2]! } : undefined;
  }

  /** The agent id when this is an agent node ID (`/agent/<id>`), else undefined. */
  get agentId(): string | undefined {
    return /^\/agent\/([^/]+)$/.exec(this.path)?.[1];
  }

  equals(other: SpiffeId): boolean {
    return this.trustDomain === other.trustDomain && this.path === other.path;
  }

  toString(): string {
    return `spiffe://${this.trustDomain}${this.path}`;
  }
}

/** Checks a trust domain name. @throws MeshError MESH_ERR_SPIFFE_ID */
export function checkTrustDomain(td: string): string {
  if (!TRUST_DOMAIN.test(td) || td.length > 255) throw new MeshError('MESH_ERR_SPIFFE_ID', `bad trust domain ${JSON.stringify(td)}: lower-case letters, digits, ".", "_" and "-" only`);
  return td;
}
