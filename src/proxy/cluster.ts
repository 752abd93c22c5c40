// A cluster: the endpoints of one upstream service, kept current by discovery updates, and its load balancer.

import { endpointKey, type DiscoveryUpdate, type Endpoint } from '../registry';
import { createLoadBalancer, type LoadBalancer } from './load-balancer';

export class Cluster {
  private endpoints: Endpoint[] = [];
  /** False until the first update arrives, and after does-not-exist. */
  private known = false;

  constructor(
    readonly name: string,
    private readonly lb: LoadBalancer = createLoadBalancer(),
  ) {}

  /** Applies one discovery update. */
  apply(update: DiscoveryUpdate): void {
    switch (update.type) {
      case 'reset':
        this.endpoints = [...update.endpoints];
        this.known = true;
        return;
      case 'add': {
        const keys = new Set(update.endpoints.map(endpointKey));
        this.endpoints = [...this.endpoints.filter((e) => !keys.has(endpointKey(e))), ...update.endpoints];
        this.known = true;
        return;
      }
      case 'remove': {
        const keys = new Set(update.addresses.map(endpointKey));
        this.endpoints = this.endpoints.filter((e) => !keys.has(endpointKey(e)));
        return;
      }
      case 'does-not-exist':
        this.endpoints = [];
        this.known = false;
        return;
    }
  }

  /** The endpoint for the next connection, or undefined when there is none. */
  pick(): Endpoint | undefined {
    return this.lb.pick(this.endpoints);
  }

  /** For status and config dumps. */
  snapshot(): { name: string; known: boolean; endpoints: readonly Endpoint[] } {
    return { name: this.name, known: this.known, endpoints: this.endpoints };
  }
}
