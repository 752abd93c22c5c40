// Applies a DestinationRule (compiled) to a cluster: subsets, load balancer, outlier detection, circuit breaker.

import { ownSubsetPolicy, type DestinationPolicy } from '../policy';
import type { Cluster, LoadBalancerSettings } from '../proxy';

/**
 * Configures `cluster` from the service-level policy, or from `subset`'s policy for a subset's own cluster, and the
 * subsets' labels (a subset's cluster still picks with the subset in the context).
 */
export function applyDestinationPolicy(cluster: Cluster, dp: DestinationPolicy, subset?: string): void {
  const tp = ownSubsetPolicy(dp, subset) ?? dp.trafficPolicy;
  cluster.setSubsets(Object.fromEntries([...dp.subsets].map(([name, s]) => [name, s.labels])));
  const lb = tp.loadBalancer;
  const settings: LoadBalancerSettings =
    lb.kind === 'CONSISTENT_HASH' ? { consistentHash: lb.hashKey ? { ...lb.hashKey } : {} } : { simple: lb.kind };
  cluster.setLoadBalancer(settings);
  const od = tp.outlierDetection;
  cluster.setOutlierDetection(
    od && {
      consecutive5xxErrors: od.consecutive5xxErrors,
      consecutiveGatewayErrors: od.consecutiveGatewayErrors,
      intervalMs: od.intervalMs,
      baseEjectionTimeMs: od.baseEjectionTimeMs,
      maxEjectionPercent: od.maxEjectionPercent,
    },
  );
  const cp = tp.connectionPool;
  cluster.setCircuitBreaker({ maxConnections: cp.maxConnections, maxPendingRequests: cp.http1MaxPendingRequests, maxRequests: cp.http2MaxRequests, maxRetries: cp.maxRetries });
}
