// Discovery as a stream of updates (reset | add | remove | does-not-exist) that every source speaks and a cluster applies.

/** A place a remote service can be reached: the inbound mTLS port of the agent on that node. */
export interface Endpoint {
  readonly address: string;
  readonly port: number;
  /** @default 1 */
  readonly weight: number;
  /** From Consul tags/meta or the endpoints file; DestinationRule subsets select on them. */
  readonly labels: Readonly<Record<string, string>>;
}

/** A service named as the mesh names it. */
export interface ServiceKey {
  readonly name: string;
  readonly namespace: string;
}

export type DiscoveryUpdate =
  | { readonly type: 'reset'; readonly endpoints: readonly Endpoint[] }
  | { readonly type: 'add'; readonly endpoints: readonly Endpoint[] }
  | { readonly type: 'remove'; readonly addresses: readonly { address: string; port: number }[] }
  | { readonly type: 'does-not-exist' };

/** A source of endpoints: static file, Consul, or several combined. */
export interface DiscoverySource {
  /** Starts delivering updates for `service`; returns a function that stops them. The first update is a reset or does-not-exist. */
  watch(service: ServiceKey, onUpdate: (update: DiscoveryUpdate) => void): () => void;
  close(): void;
}

/** "name.namespace", the key used in maps and files. */
export const serviceKeyString = (s: ServiceKey): string => `${s.name}.${s.namespace}`;

/** "address:port", the identity of an endpoint within a service. */
export const endpointKey = (e: { address: string; port: number }): string => `${e.address}:${e.port}`;
