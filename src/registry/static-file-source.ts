// A discovery source that reads remote services' endpoints from a YAML file and re-reads it when it changes.

import { unwatchFile, watchFile } from 'node:fs';
import { NAME_PATTERN } from '../ca';
import { FieldReader, ProblemList, readConfigFile } from '../config';
import { describeError, MeshError } from '../errors';
import { silentLogger, type Logger } from '../telemetry';
import { endpointKey, serviceKeyString, type DiscoverySource, type DiscoveryUpdate, type Endpoint, type ServiceKey } from './discovery';

/**
 * Parses an endpoints file:
 * ```yaml
 * services:
 *   api:                # or "api.<namespace>"; namespace defaults to "default"
 *     - { address: 10.0.0.7, port: 15443, weight: 1, labels: { version: v1 } }
 * ```
 * @throws MeshError MESH_ERR_ENDPOINTS_FILE listing every problem
 */
export function readEndpointsFile(file: string): Map<string, Endpoint[]> {
  try {
    return parseEndpoints(file);
  } catch (err) {
    const e = new MeshError('MESH_ERR_ENDPOINTS_FILE', (err as Error).message, { cause: err });
    const problems = (err as { problems?: unknown }).problems;
    throw problems ? Object.assign(e, { problems }) : e;
  }
}

function parseEndpoints(file: string): Map<string, Endpoint[]> {
  const source = readConfigFile(file);
  const problems = new ProblemList(source);
  const root = new FieldReader(source.data, [], problems);
  const servicesRaw = root.raw('services');
  root.done();
  const out = new Map<string, Endpoint[]>();
  const services = new FieldReader(servicesRaw, ['services'], problems);
  for (const key of Object.keys((servicesRaw ?? {}) as object)) {
    const [name, namespace = 'default', extra] = key.split('.');
    if (!NAME_PATTERN.test(name ?? '') || !NAME_PATTERN.test(namespace) || extra !== undefined) {
      services.fail(key, 'service key must be "<name>" or "<name>.<namespace>" in lower-case letters, digits and "-"');
    }
    const endpoints = services.list(key).map((e): Endpoint => {
      const address = e.string('address', '', { required: true });
      const port = e.port('port', 0, { required: true });
      const weight = e.integer('weight', 1, { min: 1, max: 1000 });
      const labelsRaw = e.raw('labels') ?? {};
      const labels: Record<string, string> = {};
      if (typeof labelsRaw !== 'object' || Array.isArray(labelsRaw)) e.fail('labels', 'must be a mapping of label: value');
      else for (const [k, v] of Object.entries(labelsRaw as object)) labels[k] = String(v);
      e.done();
      return { address, port, weight, labels };
    });
    out.set(serviceKeyString({ name: name ?? '', namespace }), endpoints);
  }
  problems.throwIfAny(`endpoints file ${file}`);
  return out;
}

/** Serves endpoints from a file; a bad edit is logged and the last good content kept. */
export class StaticFileSource implements DiscoverySource {
  private current: Map<string, Endpoint[]>;
  private readonly watchers = new Map<string, Set<(u: DiscoveryUpdate) => void>>();
  private readonly log: Logger;
  private readonly onChange = (): void => void this.reload();

  /** @throws MeshError MESH_ERR_ENDPOINTS_FILE when the file is invalid at start */
  constructor(readonly file: string, opts: { log?: Logger; pollMs?: number } = {}) {
    this.log = opts.log ?? silentLogger;
    this.current = readEndpointsFile(file);
    watchFile(file, { interval: opts.pollMs ?? 1000, persistent: false }, this.onChange);
  }

  watch(service: ServiceKey, onUpdate: (update: DiscoveryUpdate) => void): () => void {
    const key = serviceKeyString(service);
    let set = this.watchers.get(key);
    if (!set) this.watchers.set(key, (set = new Set()));
    set.add(onUpdate);
    onUpdate(this.updateFor(key));
    return () => set.delete(onUpdate);
  }

  /** Re-reads the file now (also done on change); returns false when the new content was rejected. */
  reload(): boolean {
    let next: Map<string, Endpoint[]>;
    try {
      next = readEndpointsFile(this.file);
    } catch (err) {
      this.log.error('endpoints file rejected, keeping the last good endpoints', { file: this.file, error: describeError(err) });
      return false;
    }
    const before = this.current;
    this.current = next;
    for (const [key, set] of this.watchers) {
      if (sameEndpoints(before.get(key), next.get(key))) continue;
      const update = this.updateFor(key);
      for (const fn of set) fn(update);
    }
    this.log.info('endpoints file reloaded', { file: this.file, services: next.size });
    return true;
  }

  close(): void {
    unwatchFile(this.file, this.onChange);
    this.watchers.clear();
  }

  private updateFor(key: string): DiscoveryUpdate {
    const eps = this.current.get(key);
    return eps ? { type: 'reset', endpoints: eps } : { type: 'does-not-exist' };
  }
}

function sameEndpoints(a: Endpoint[] | undefined, b: Endpoint[] | undefined): boolean {
  if (!a || !b) return a === b;
  const fmt = (e: Endpoint): string => `${endpointKey(e)}/${e.weight}/${JSON.stringify(e.labels)}`;
  return a.map(fmt).sort().join(',') === b.map(fmt).sort().join(',');
}
