// ServiceEntry: services outside the mesh (or VMs added to it): hosts, ports, how they resolve, their endpoints.

import { isIP } from 'node:net';
import type { FieldReader } from '../config';
import { readHostList, readInteger, readStringMap, rejectUnimplemented } from './fields';
import type { PolicyResource } from './resource';

export const SERVICE_PROTOCOLS = ['HTTP', 'HTTPS', 'HTTP2', 'GRPC', 'TLS', 'TCP', 'MONGO'] as const;
export type ServiceProtocol = (typeof SERVICE_PROTOCOLS)[number];
export const RESOLUTIONS = ['NONE', 'STATIC', 'DNS'] as const;
export type Resolution = (typeof RESOLUTIONS)[number];
export const LOCATIONS = ['MESH_EXTERNAL', 'MESH_INTERNAL'] as const;
export type Location = (typeof LOCATIONS)[number];

export interface ServicePort {
  readonly number: number;
  readonly name?: string;
  /** @default "TCP" */
  readonly protocol: ServiceProtocol;
}

export interface WorkloadEntry {
  /** An IP address (STATIC) or a host name (DNS). */
  readonly address: string;
  /** Port name (from `ports[].name`) -> port number on this endpoint. */
  readonly ports: Readonly<Record<string, number>>;
  readonly labels: Readonly<Record<string, string>>;
}

/** A ServiceEntry's spec; hosts as written, lower-cased. */
export interface ServiceEntrySpec {
  readonly hosts: readonly string[];
  readonly ports: readonly ServicePort[];
  /** @default "NONE" */
  readonly resolution: Resolution;
  readonly endpoints: readonly WorkloadEntry[];
  /** @default "MESH_EXTERNAL" */
  readonly location: Location;
}

/** A validated ServiceEntry document. */
export type ServiceEntry = PolicyResource<'ServiceEntry', ServiceEntrySpec>;

/** Reads and checks a ServiceEntry spec. */
export function readServiceEntrySpec(r: FieldReader): ServiceEntrySpec {
  const hosts = readHostList(r, 'hosts', { required: true });
  const numbers = new Set<number>();
  const names = new Set<string>();
  const ports = r.list('ports').map((p, i): ServicePort => {
    const number = readInteger(p, 'number', 1, 65535, { required: true }) ?? 0;
    const name = p.has('name') ? p.string('name', '', { pattern: /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, hint: 'a port name such as "https"' }) : undefined;
    const protocol = p.has('protocol') ? p.oneOf('protocol', SERVICE_PROTOCOLS, 'TCP') : 'TCP';
    if (number && numbers.has(number)) r.problems.add([...r.path, 'ports', i, 'number'], `port ${number} is listed twice`);
    if (name && names.has(name)) r.problems.add([...r.path, 'ports', i, 'name'], `port name ${JSON.stringify(name)} is used twice`);
    numbers.add(number);
    if (name) names.add(name);
    rejectUnimplemented(p, ['targetPort']);
    p.done();
    return { number, ...(name ? { name } : {}), protocol };
  });
  const resolution = r.oneOf('resolution', RESOLUTIONS, 'NONE');
  const location = r.oneOf('location', LOCATIONS, 'MESH_EXTERNAL');
  const endpoints = r.list('endpoints').map((e): WorkloadEntry => {
    const address = e.string('address', '', { required: true });
    if (address && resolution === 'STATIC' && !isIP(address)) e.fail('address', `got ${JSON.stringify(address)}, expected an IP address (resolution is STATIC)`);
    if (address && resolution === 'DNS' && !isIP(address) && !/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/i.test(address)) e.fail('address', `got ${JSON.stringify(address)}, expected a host name or IP address`);
    const portsRaw = readStringMap(e, 'ports');
    const eports: Record<string, number> = {};
    for (const [k, v] of Object.entries(portsRaw)) {
      const n = Number(v);
      if (!names.has(k)) e.problems.add([...e.path, 'ports', k], `names no port of this ServiceEntry; port names: ${[...names].join(', ') || '(none, give ports a name)'}`);
      else if (!/^\d+$/.test(v) || n < 1 || n > 65535) e.problems.add([...e.path, 'ports', k], `got ${JSON.stringify(v)}, expected a port number from 1 to 65535`);
      else eports[k] = n;
    }
    const labels = readStringMap(e, 'labels');
    rejectUnimplemented(e, ['network', 'locality', 'weight', 'serviceAccount']);
    e.done();
    return { address, ports: eports, labels };
  });
  if (resolution === 'STATIC' && endpoints.length === 0) r.fail('endpoints', 'is required when resolution is STATIC');
  if (resolution === 'NONE' && endpoints.length > 0) r.fail('endpoints', 'cannot be used with resolution NONE; use STATIC or DNS');
  if (ports.length === 0) r.fail('ports', 'is required (at least one {number, protocol})');
  rejectUnimplemented(r, ['addresses', 'exportTo', 'subjectAltNames', 'workloadSelector']);
  r.done();
  return { hosts, ports, resolution, endpoints, location };
}
