// From the agent's services, upstreams and endpoints to the capture rules and the services' virtual IPs.

import type { HostPort } from '../config';
import { ipv4ToNumber, assignVirtualIps, parseCidr } from './virtual-ips';
import type { CaptureRules, CapturedDestination } from './capture-rules';

/** What the rules hold besides the services (the agent config's `capture` block). */
export interface CaptureSettings {
  /** Where the services' virtual IPs come from; inside 127.0.0.0/8 no route is needed. @default "127.240.0.0/16" */
  readonly virtualIpRange: string;
  /** Redirect TCP from other hosts to the local services' ports to the inbound (mTLS) port. @default true */
  readonly redirectInbound: boolean;
  /** Uids whose connections are never captured, besides the agent's own. @default [] */
  readonly excludeUids: readonly number[];
  /** Destinations (IPv4 CIDRs) and destination ports never captured. @default [] */
  readonly excludeCidrs: readonly string[];
  readonly excludePorts: readonly number[];
  /** Local service ports left out of inbound capture. @default [] */
  readonly excludeInboundPorts: readonly number[];
}

/** What the agent runs: its services (their upstreams are the destinations apps may dial) and its ports. */
export interface CaptureSubject {
  readonly services: readonly {
    readonly target: HostPort;
    readonly upstreams: readonly { readonly service: string; readonly namespace: string; readonly listen: HostPort; readonly servicePort: number }[];
  }[];
  readonly inboundPort: number;
  readonly agentPorts: readonly number[];
  /** The addresses of a service's endpoints now (the nodes running it), empty when none are known. */
  readonly endpointAddresses: (service: { name: string; namespace: string }) => readonly string[];
}

/** The rules, the virtual IP of each upstream service ("name.namespace"), and destinations claimed twice (the first listed wins). */
export interface CapturePlan {
  readonly rules: CaptureRules;
  readonly virtualIps: ReadonlyMap<string, string>;
  readonly conflicts: readonly string[];
}

/**
 * Every upstream becomes two kinds of destination, both DNATed to its local listener: the service's virtual IP and
 * each endpoint address, at the upstream's servicePort. `agentUid` (the agent's own) is excluded first.
 * @throws MeshError MESH_ERR_CONFIG when the virtual IP range is too small or not a CIDR
 */
export function planCapture(settings: CaptureSettings, subject: CaptureSubject, agentUid: number): CapturePlan {
  const upstreams = subject.services.flatMap((s) => s.upstreams);
  const virtualIps = assignVirtualIps(
    upstreams.map((u) => `${u.service}.${u.namespace}`),
    parseCidr(settings.virtualIpRange),
  );
  const outbound: CapturedDestination[] = [];
  const claimed = new Map<string, string>();
  const conflicts: string[] = [];
  for (const u of upstreams) {
    const service = `${u.service}.${u.namespace}`;
    const addresses = [virtualIps.get(service)!, ...subject.endpointAddresses({ name: u.service, namespace: u.namespace }).filter((a) => ipv4ToNumber(a) !== undefined)];
    for (const address of addresses) {
      const key = `${address}:${u.servicePort}`;
      const to = `${u.listen.host}:${u.listen.port}`;
      const before = claimed.get(key);
      if (before !== undefined) {
        if (before !== to) conflicts.push(`${key} (${service}) goes to ${before}, not ${to}`);
        continue;
      }
      claimed.set(key, to);
      outbound.push({ address, port: u.servicePort, to: u.listen, service });
    }
  }
  const inboundPorts = settings.redirectInbound ? subject.services.map((s) => s.target.port).filter((p) => !settings.excludeInboundPorts.includes(p)) : [];
  return {
    rules: {
      excludeUids: [...new Set([agentUid, ...settings.excludeUids])],
      excludeCidrs: settings.excludeCidrs,
      excludePorts: settings.excludePorts,
      agentPorts: subject.agentPorts,
      outbound,
      inboundPorts,
      inboundPort: subject.inboundPort,
    },
    virtualIps,
    conflicts,
  };
}
