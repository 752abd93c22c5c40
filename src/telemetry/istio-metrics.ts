// Istio's standard request and TCP metrics (same names, same labels), kept per hop: one side of one caller → callee pair.
//
// A Hop holds the labels that do not change per request (reporter, source, destination, protocol, mTLS), resolved
// once per listener or connection. Per request only the response code, flags and grpc-status vary: the children for
// each combination are made on first use and kept in a Map keyed by a number, so a request costs a Map lookup, a
// counter increment and three histogram observations, with no string building.

import type { Counter, Histogram, HistogramChild, CounterChild, MetricsRegistry } from './metrics';
import type { RequestAggregator, RequestEdge } from './request-stats';

/** Istio's default buckets of istio_request_duration_milliseconds. */
export const DURATION_BUCKETS_MS: readonly number[] = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];
/** Istio's buckets of istio_request_bytes / istio_response_bytes. */
export const SIZE_BUCKETS: readonly number[] = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000];

/** Which side reports: the caller's agent (outbound) or the callee's (inbound). */
export type Reporter = 'source' | 'destination';

/** The labels of one hop that stay the same for every request over it. Unknown values are "unknown", as in Istio. */
export interface HopLabels {
  readonly reporter: Reporter;
  readonly sourceWorkload: string;
  readonly sourceNamespace: string;
  readonly sourcePrincipal: string;
  readonly destinationWorkload: string;
  readonly destinationService: string;
  readonly destinationNamespace: string;
  readonly destinationPrincipal: string;
  /** request_protocol: http (HTTP/1.1 and HTTP/2), grpc, or tcp. */
  readonly protocol: 'http' | 'grpc' | 'tcp';
  /** connection_security_policy: mutual_tls, or none (plaintext). */
  readonly mtls: boolean;
}

/** No response flag, as Envoy writes it. */
export const NO_FLAGS = '-';

const HTTP_LABELS = [
  'reporter',
  'source_workload',
  'source_workload_namespace',
  'source_principal',
  'destination_workload',
  'destination_service_name',
  'destination_service_namespace',
  'destination_principal',
  'request_protocol',
  'response_code',
  'grpc_response_status',
  'response_flags',
  'connection_security_policy',
] as const;
const TCP_LABELS = HTTP_LABELS.filter((l) => l !== 'response_code' && l !== 'grpc_response_status');

/** The children one (code, grpc-status, flags) combination of a hop counts into. */
interface RequestChildren {
  readonly code: number;
  readonly grpcStatus: number;
  readonly flags: string;
  readonly requests: CounterChild;
  readonly duration: HistogramChild;
  readonly requestBytes: HistogramChild;
  readonly responseBytes: HistogramChild;
}

interface TcpChildren {
  readonly opened: CounterChild;
  readonly closed: CounterChild;
  readonly sent: CounterChild;
  readonly received: CounterChild;
}

/** The registered Istio families of one agent. */
export class IstioMetrics {
  readonly requests: Counter;
  readonly duration: Histogram;
  readonly requestBytes: Histogram;
  readonly responseBytes: Histogram;
  readonly tcpSent: Counter;
  readonly tcpReceived: Counter;
  readonly tcpOpened: Counter;
  readonly tcpClosed: Counter;
  private readonly hops = new Map<string, Hop>();

  constructor(
    r: MetricsRegistry,
    /** The per-edge counts the agent sends to the server's dashboard, fed by the caller's side of every hop. */
    readonly edges?: RequestAggregator,
  ) {
    this.requests = r.counter('istio_requests_total', 'Requests, by hop, response code and response flags (Istio standard metric).', HTTP_LABELS);
    this.duration = r.histogram('istio_request_duration_milliseconds', 'Request duration in milliseconds, from the first request byte to the last response byte (Istio standard metric).', HTTP_LABELS, DURATION_BUCKETS_MS);
    this.requestBytes = r.histogram('istio_request_bytes', 'Request size in bytes, head and body (Istio standard metric).', HTTP_LABELS, SIZE_BUCKETS);
    this.responseBytes = r.histogram('istio_response_bytes', 'Response size in bytes, head and body (Istio standard metric).', HTTP_LABELS, SIZE_BUCKETS);
    this.tcpSent = r.counter('istio_tcp_sent_bytes_total', 'Bytes sent to the downstream of a TCP connection (Istio standard metric).', TCP_LABELS);
    this.tcpReceived = r.counter('istio_tcp_received_bytes_total', 'Bytes received from the downstream of a TCP connection (Istio standard metric).', TCP_LABELS);
    this.tcpOpened = r.counter('istio_tcp_connections_opened_total', 'TCP connections opened (Istio standard metric).', TCP_LABELS);
    this.tcpClosed = r.counter('istio_tcp_connections_closed_total', 'TCP connections closed (Istio standard metric).', TCP_LABELS);
  }

  /** The hop for these labels, the same object for the same labels (call it per listener or connection, not per request). */
  hop(labels: HopLabels): Hop {
    const key = labelValues(labels).join('\u0000');
    let hop = this.hops.get(key);
    if (!hop) this.hops.set(key, (hop = new Hop(labels, this)));
    return hop;
  }

  /** Every hop seen so far. */
  allHops(): IterableIterator<Hop> {
    return this.hops.values();
  }
}

function labelValues(l: HopLabels): string[] {
  return [
    l.reporter,
    l.sourceWorkload,
    l.sourceNamespace,
    l.sourcePrincipal,
    l.destinationWorkload,
    l.destinationService,
    l.destinationNamespace,
    l.destinationPrincipal,
    l.protocol,
    l.mtls ? 'mutual_tls' : 'none',
  ];
}

/** The request statistics of one (hop, code, grpc-status, flags), as `snapshot()` gives them. */
export interface RequestStats {
  readonly reporter: Reporter;
  readonly source: { readonly workload: string; readonly namespace: string; readonly principal: string };
  readonly destination: { readonly workload: string; readonly service: string; readonly namespace: string; readonly principal: string };
  readonly protocol: string;
  readonly responseCode: number;
  /** -1 when the request was not gRPC. */
  readonly grpcStatus: number;
  readonly responseFlags: string;
  readonly requests: number;
  /** Latency histogram in milliseconds: upper bounds and per-bucket counts (not cumulative; the last is +Inf). */
  readonly durationMs: { readonly bounds: readonly number[]; readonly counts: readonly number[]; readonly sum: number; readonly count: number };
}

/** One side of one caller → callee pair; see the file comment. */
export class Hop {
  private readonly plain = new Map<number, RequestChildren>();
  private readonly flagged = new Map<string, RequestChildren>();
  private readonly values: readonly string[];
  private tcp: TcpChildren | undefined;
  /** The dashboard's edge for this hop: on the caller's side only, so each request is counted once mesh-wide. */
  private readonly edge: RequestEdge | undefined;

  constructor(
    readonly labels: HopLabels,
    private readonly families: IstioMetrics,
  ) {
    this.values = labelValues(labels);
    this.edge =
      labels.reporter === 'source' && labels.protocol !== 'tcp'
        ? families.edges?.edge({ name: labels.sourceWorkload, namespace: labels.sourceNamespace }, { name: labels.destinationService, namespace: labels.destinationNamespace })
        : undefined;
  }

  /**
   * Counts one finished request. `grpcStatus` is -1 for a request that is not gRPC; `flags` is NO_FLAGS or Envoy's
   * comma-separated flags.
   */
  request(code: number, flags: string, grpcStatus: number, durationMs: number, requestBytes: number, responseBytes: number): void {
    const c = flags === NO_FLAGS ? this.plain.get(code * 32 + grpcStatus + 1) : this.flagged.get(`${code}/${grpcStatus}/${flags}`);
    const children = c ?? this.children(code, flags, grpcStatus);
    children.requests.value++;
    children.duration.observe(durationMs);
    children.requestBytes.observe(requestBytes);
    children.responseBytes.observe(responseBytes);
    this.edge?.record(code, durationMs);
  }

  /** Counts a TCP connection opened. */
  tcpOpened(): void {
    this.tcpChildren().opened.value++;
  }

  /** Counts a TCP connection closed with the bytes it carried each way (as seen from its downstream). */
  tcpClosed(sent: number, received: number): void {
    const t = this.tcpChildren();
    t.closed.value++;
    t.sent.value += sent;
    t.received.value += received;
  }

  /** Per (code, grpc-status, flags): the request count and the latency histogram. */
  snapshot(): RequestStats[] {
    const l = this.labels;
    const out: RequestStats[] = [];
    for (const c of [...this.plain.values(), ...this.flagged.values()]) {
      out.push({
        reporter: l.reporter,
        source: { workload: l.sourceWorkload, namespace: l.sourceNamespace, principal: l.sourcePrincipal },
        destination: { workload: l.destinationWorkload, service: l.destinationService, namespace: l.destinationNamespace, principal: l.destinationPrincipal },
        protocol: l.protocol,
        responseCode: c.code,
        grpcStatus: c.grpcStatus,
        responseFlags: c.flags,
        requests: c.requests.value,
        durationMs: { bounds: c.duration.bounds, counts: [...c.duration.counts], sum: c.duration.sum, count: c.duration.count },
      });
    }
    return out;
  }

  private children(code: number, flags: string, grpcStatus: number): RequestChildren {
    const v = this.values;
    const all = [...v.slice(0, 9), String(code), grpcStatus < 0 ? '' : String(grpcStatus), flags, v[9]!];
    const f = this.families;
    const c: RequestChildren = {
      code,
      grpcStatus,
      flags,
      requests: f.requests.labels(...all),
      duration: f.duration.labels(...all),
      requestBytes: f.requestBytes.labels(...all),
      responseBytes: f.responseBytes.labels(...all),
    };
    if (flags === NO_FLAGS) this.plain.set(code * 32 + grpcStatus + 1, c);
    else this.flagged.set(`${code}/${grpcStatus}/${flags}`, c);
    return c;
  }

  private tcpChildren(): TcpChildren {
    if (!this.tcp) {
      const v = this.values;
      const all = [...v.slice(0, 9), NO_FLAGS, v[9]!];
      const f = this.families;
      this.tcp = { opened: f.tcpOpened.labels(...all), closed: f.tcpClosed.labels(...all), sent: f.tcpSent.labels(...all), received: f.tcpReceived.labels(...all) };
    }
    return this.tcp;
  }
}
