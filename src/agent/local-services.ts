// The services this node runs: the config file's and those the local Consul agent lists, merged; and what changed between two sets.

import { formatHostPort, type HostPort } from '../config';
import type { ConsulLocalService } from '../registry';
import type { LocalServiceConfig, UpstreamConfig } from './agent-config';

/** A service the agent runs now, with where it came from. */
export interface ActiveService extends LocalServiceConfig {
  readonly origin: 'config' | 'consul';
  /** The Consul service ID, for services from Consul. */
  readonly consulId?: string;
}

/** "namespace/name", the key of a local service. */
export const serviceKey = (s: { name: string; namespace: string }): string => `${s.namespace}/${s.name}`;

/** The key of an upstream listener: who calls whom, on which port, speaking what. Equal keys mean an unchanged listener. */
export const upstreamKey = (s: { name: string; namespace: string }, u: UpstreamConfig): string =>
  `${serviceKey(s)}->${u.namespace}/${u.service}@${formatHostPort(u.listen)}/${u.protocol}`;

/** A Consul registration as a local service (its upstreams bind to 127.0.0.1). */
export function serviceFromConsul(c: ConsulLocalService): ActiveService {
  return {
    name: c.name,
    namespace: c.namespace,
    target: { host: c.address, port: c.port },
    protocol: c.protocol,
    labels: { app: c.name, ...c.labels },
    upstreams: c.upstreams.map((u) => ({ service: u.service, namespace: u.namespace, listen: { host: '127.0.0.1', port: u.port }, protocol: u.protocol, servicePort: u.port })),
    tags: [],
    meta: {},
    check: undefined,
    origin: 'consul',
    consulId: c.id,
  };
}

/**
 * Config services first, then Consul's. A Consul service is left out (with a warning) when the config has the
 * same service (config wins), when an earlier Consul registration already is that service, or when one of its
 * upstream ports is taken (the inbound and admin ports, any other upstream).
 */
export function mergeLocalServices(
  config: readonly LocalServiceConfig[],
  consul: readonly ConsulLocalService[],
  ports: { readonly inbound: HostPort; readonly admin: HostPort },
): { services: ActiveService[]; warnings: { service: string; id: string; message: string }[] } {
  const services: ActiveService[] = config.map((s) => ({ ...s, origin: 'config' }));
  const warnings: { service: string; id: string; message: string }[] = [];
  const byKey = new Map(services.map((s) => [serviceKey(s), s]));
  const taken = new Map<number, string>([
    [ports.inbound.port, 'the inbound port'],
    [ports.admin.port, 'the admin port'],
  ]);
  for (const s of services) for (const u of s.upstreams) taken.set(u.listen.port, `upstream ${u.namespace}/${u.service} of ${serviceKey(s)} (config)`);
  for (const c of consul) {
    const key = serviceKey(c);
    const other = byKey.get(key);
    if (other) {
      warnings.push({
        service: key,
        id: c.id,
        message: other.origin === 'config' ? 'the config file has this service too; the config file wins' : `Consul registration ${other.consulId} is this service too; it came first and wins`,
      });
      continue;
    }
    const clash = c.upstreams.find((u) => taken.has(u.port));
    if (clash) {
      warnings.push({ service: key, id: c.id, message: `upstream port ${clash.port} is already used by ${taken.get(clash.port)}; the service is left out` });
      continue;
    }
    const s = serviceFromConsul(c);
    services.push(s);
    byKey.set(key, s);
    for (const u of c.upstreams) taken.set(u.port, `upstream ${u.namespace}/${u.service} of ${key} (Consul ${c.id})`);
  }
  return { services, warnings };
}

/** What differs between two service sets, by key. */
export interface ServiceChanges {
  readonly servicesAdded: string[];
  readonly servicesRemoved: string[];
  /** Same service, another target, protocol or origin. */
  readonly servicesChanged: string[];
  readonly upstreamsAdded: string[];
  readonly upstreamsRemoved: string[];
}

export function diffServices(before: readonly ActiveService[], after: readonly ActiveService[]): ServiceChanges {
  const b = new Map(before.map((s) => [serviceKey(s), s]));
  const a = new Map(after.map((s) => [serviceKey(s), s]));
  const ub = new Set(before.flatMap((s) => s.upstreams.map((u) => upstreamKey(s, u))));
  const ua = new Set(after.flatMap((s) => s.upstreams.map((u) => upstreamKey(s, u))));
  const same = (x: ActiveService, y: ActiveService): boolean => formatHostPort(x.target) === formatHostPort(y.target) && x.protocol === y.protocol && x.origin === y.origin;
  return {
    servicesAdded: [...a.keys()].filter((k) => !b.has(k)),
    servicesRemoved: [...b.keys()].filter((k) => !a.has(k)),
    servicesChanged: [...a.keys()].filter((k) => b.has(k) && !same(b.get(k)!, a.get(k)!)),
    upstreamsAdded: [...ua].filter((k) => !ub.has(k)),
    upstreamsRemoved: [...ub].filter((k) => !ua.has(k)),
  };
}

/** True when nothing in `c` changed. */
export const noChanges = (c: ServiceChanges): boolean => Object.values(c).every((l: string[]) => l.length === 0);
