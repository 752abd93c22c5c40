// Stable virtual IPs for mesh services: one address per service from a configured IPv4 range, the same for the same set.

import { createHash } from 'node:crypto';
import { MeshError } from '../errors';

/** An IPv4 range in CIDR form, as numbers. */
export interface Ipv4Range {
  readonly base: number;
  readonly bits: number;
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** "10.1.2.3" as an unsigned 32-bit number, or undefined when it is not a dotted IPv4 address. */
export function ipv4ToNumber(ip: string): number | undefined {
  const m = IPV4.exec(ip);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

export function numberToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/**
 * Parses "a.b.c.d/n" (a bare address is /32); the address must be the range's first one.
 * @throws MeshError MESH_ERR_CONFIG naming the text
 */
export function parseCidr(text: string): Ipv4Range {
  const [ip, len = '32', extra] = text.split('/');
  const base = ipv4ToNumber(ip ?? '');
  const bits = /^\d{1,2}$/.test(len) ? Number(len) : NaN;
  if (base === undefined || extra !== undefined || !(bits >= 0 && bits <= 32)) throw new MeshError('MESH_ERR_CONFIG', `${JSON.stringify(text)} is not an IPv4 CIDR such as "10.0.0.0/8"`);
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  if ((base & mask) >>> 0 !== base) throw new MeshError('MESH_ERR_CONFIG', `${JSON.stringify(text)} has host bits set; the range starts at ${numberToIpv4((base & mask) >>> 0)}/${bits}`);
  return { base, bits };
}

/**
 * One address per key ("name.namespace") inside `range`, skipping the range's first and last address. Each key
 * starts at a slot picked by its hash; taken slots move it to the next free one, keys placed in sorted order —
 * so a key keeps its address as long as no other key of the set hashes onto it first.
 * @throws MeshError MESH_ERR_CONFIG when the range has fewer usable addresses than keys
 */
export function assignVirtualIps(keys: readonly string[], range: Ipv4Range): Map<string, string> {
  const size = 2 ** (32 - range.bits);
  const usable = size - 2;
  const unique = [...new Set(keys)].sort();
  if (unique.length > usable) throw new MeshError('MESH_ERR_CONFIG', `capture.virtualIpRange ${numberToIpv4(range.base)}/${range.bits} has ${Math.max(usable, 0)} usable addresses for ${unique.length} services`);
  const taken = new Set<number>();
  const out = new Map<string, string>();
  for (const key of unique) {
    let slot = createHash('sha256').update(key).digest().readUInt32BE(0) % usable;
    while (taken.has(slot)) slot = (slot + 1) % usable;
    taken.add(slot);
    out.set(key, numberToIpv4((range.base + 1 + slot) >>> 0));
  }
  return out;
}
