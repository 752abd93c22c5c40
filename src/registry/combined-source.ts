// A discovery source that merges the streams of several sources (e.g. an endpoints file and Consul) for each service.

import { endpointKey, type DiscoverySource, type DiscoveryUpdate, type Endpoint, type ServiceKey } from './discovery';

type SourceState = undefined | 'does-not-exist' | Map<string, Endpoint>;

/**
 * Serves the union of what its sources say about a service, as `reset` updates.
 * - When two sources name the same address:port, the earlier source in the list wins (its weight and labels).
 * - The service does not exist only when every source says so; until every source has answered, a
 *   does-not-exist from some of them is held back (a slow Consul must not make a service vanish at start).
 * - Endpoints are served as soon as any source has some; a source that has not answered yet adds none.
 */
export class CombinedSource implements DiscoverySource {
  constructor(private readonly sources: readonly DiscoverySource[]) {}

  watch(service: ServiceKey, onUpdate: (update: DiscoveryUpdate) => void): () => void {
    const states: SourceState[] = this.sources.map(() => undefined);
    let last: string | undefined;
    const emit = (): void => {
      const maps = states.filter((s): s is Map<string, Endpoint> => s instanceof Map);
      if (maps.length === 0) {
        if (states.every((s) => s === 'does-not-exist') && last !== 'does-not-exist') {
          last = 'does-not-exist';
          onUpdate({ type: 'does-not-exist' });
        }
        return;
      }
      const merged = new Map<string, Endpoint>();
      for (const m of maps) for (const [k, e] of m) if (!merged.has(k)) merged.set(k, e);
      const endpoints = [...merged.values()];
      const fp = JSON.stringify(endpoints.map((e) => [endpointKey(e), e.weight, Object.entries(e.labels).sort()]).sort());
      if (fp === last) return;
      last = fp;
      onUpdate({ type: 'reset', endpoints });
    };
    const stops = this.sources.map((source, i) =>
      source.watch(service, (u) => {
        states[i] = applyUpdate(states[i], u);
        emit();
      }),
    );
    return () => {
      for (const stop of stops) stop();
    };
  }

  close(): void {
    for (const s of this.sources) s.close();
  }
}

function applyUpdate(state: SourceState, u: DiscoveryUpdate): SourceState {
  switch (u.type) {
    case 'reset':
      return new Map(u.endpoints.map((e) => [endpointKey(e), e]));
    case 'add': {
      const next = new Map(state instanceof Map ? state : []);
      for (const e of u.endpoints) next.set(endpointKey(e), e);
      return next;
    }
    case 'remove': {
      if (!(state instanceof Map)) return state;
      const next = new Map(state);
      for (const a of u.addresses) next.delete(endpointKey(a));
      return next;
    }
    case 'does-not-exist':
      return 'does-not-exist';
  }
}
