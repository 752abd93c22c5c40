// Load balancers behind one small interface, chosen by name through a factory.

import type { Endpoint } from '../registry';

/** Picks the endpoint for the next connection or request. */
export interface LoadBalancer {
  pick(endpoints: readonly Endpoint[]): Endpoint | undefined;
}

/** Each endpoint in turn. */
export class RoundRobin implements LoadBalancer {
  private next = 0;

  pick(endpoints: readonly Endpoint[]): Endpoint | undefined {
    if (endpoints.length === 0) return undefined;
    const e = endpoints[this.next % endpoints.length];
    this.next = (this.next + 1) % endpoints.length;
    return e;
  }
}

export type LoadBalancerKind = 'ROUND_ROBIN';

/** Makes the load balancer a cluster asked for. */
export function createLoadBalancer(kind: LoadBalancerKind = 'ROUND_ROBIN'): LoadBalancer {
  switch (kind) {
    case 'ROUND_ROBIN':
      return new RoundRobin();
  }
}
