// The compiled snapshot the proxy is configured from: listeners, routes to local apps, and upstream clusters.

import type { SecureContext } from 'node:tls';
import type { SpiffeId } from '../ca';
import type { HostPort } from '../config';
import type { Workload } from '../policy';

/** tcp: bytes; http: HTTP/1.1 exchanges; http2 / grpc: HTTP/2 streams (grpc answers its own failures with grpc-status). */
export type Protocol = 'http' | 'http2' | 'grpc' | 'tcp';

/** A local service reachable through the inbound port, chosen by SNI. */
export interface InboundRoute {
  /** `<service>.<namespace>.<trust-domain>`, the SNI callers send. */
  readonly sni: string;
  /** The identity this node presents for the service. */
  readonly identity: SpiffeId;
  /** The local app. */
  readonly target: HostPort;
  readonly protocol: Protocol;
  /** The service as PeerAuthentication and AuthorizationPolicy select it (name, namespace, labels). */
  readonly workload: Workload;
}

/** A local port that leads to a remote service. */
export interface OutboundRoute {
  readonly listen: HostPort;
  /** The service the port leads to (routing may send a request elsewhere). */
  readonly service: { readonly name: string; readonly namespace: string };
  /** The cluster (remote service) connections go to. */
  readonly cluster: string;
  /** The identity presented to the remote agent: the local service that calls. */
  readonly source: SpiffeId;
  /** The identity the remote side must prove. */
  readonly destination: SpiffeId;
  readonly sni: string;
  readonly protocol: Protocol;
  /** Labels of the calling workload, for VirtualService `match.sourceLabels`. */
  readonly sourceLabels: Readonly<Record<string, string>>;
}

/** Key material the proxy draws on, kept current by the agent (certificates rotate under it). */
export interface CredentialStore {
  /** The TLS context (key, certificate, trust bundle) of a local identity, if it has one yet. */
  contextFor(identity: SpiffeId): SecureContext | undefined;
  readonly trustDomain: string;
}
