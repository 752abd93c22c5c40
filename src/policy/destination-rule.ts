// DestinationRule: what happens after routing picked a host (subsets by label, and their traffic policies).

import type { FieldReader } from '../config';
import { readHost, readStringMap, rejectUnimplemented } from './fields';
import { LABEL_PATTERN } from './hosts';
import type { PolicyResource } from './resource';
import { readTrafficPolicy, type TrafficPolicy } from './traffic-policy';

/** A named group of the host's endpoints, selected by labels, optionally with its own traffic policy. */
export interface Subset {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly trafficPolicy?: TrafficPolicy;
}

/** A DestinationRule's spec; `host` as written, lower-cased. */
export interface DestinationRuleSpec {
  readonly host: string;
  readonly trafficPolicy?: TrafficPolicy;
  readonly subsets: readonly Subset[];
}

/** A validated DestinationRule document. */
export type DestinationRule = PolicyResource<'DestinationRule', DestinationRuleSpec>;

/** Reads and checks a DestinationRule spec. */
export function readDestinationRuleSpec(r: FieldReader): DestinationRuleSpec {
  const host = readHost(r, 'host', { required: true });
  const trafficPolicy = r.has('trafficPolicy') ? readTrafficPolicy(r.object('trafficPolicy')) : undefined;
  const names = new Set<string>();
  const subsets = r.list('subsets').map((s, i): Subset => {
    const name = s.string('name', '', { required: true, pattern: LABEL_PATTERN, hint: 'a subset name (lower-case letters, digits and "-", such as "v1")' });
    if (name && names.has(name)) r.problems.add([...r.path, 'subsets', i, 'name'], `subset ${JSON.stringify(name)} is defined twice`);
    names.add(name);
    const labels = readStringMap(s, 'labels');
    const tp = s.has('trafficPolicy') ? readTrafficPolicy(s.object('trafficPolicy')) : undefined;
    s.done();
    return { name, labels, ...(tp ? { trafficPolicy: tp } : {}) };
  });
  rejectUnimplemented(r, ['exportTo', 'workloadSelector']);
  r.done();
  return { host, ...(trafficPolicy ? { trafficPolicy } : {}), subsets };
}
