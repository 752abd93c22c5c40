// Limits on what a client may send the proxy: head size and header count, bodies kept for retries, connections, HTTP/2.

/** The agent's `limits` block; the same for every listener of the agent. Documented in docs/configuration.md. */
export interface ProxyLimits {
  /** Largest HTTP/1.1 request head (request line and headers), and HTTP/2 header list; over it: 431. @default 65536 */
  readonly maxHeadBytes: number;
  /** Most header fields in a request (HTTP/1.1) or header list (HTTP/2); over it: 431. @default 100 */
  readonly maxHeaders: number;
  /** Largest request body kept to replay on a retry; a larger one is sent once, without retries. @default 65536 */
  readonly maxRetryBodyBytes: number;
  /** Open connections per listener (each upstream port, the inbound port); over it: HTTP 503 and close, or a close. @default 10000 */
  readonly maxConnections: number;
  /** Streams open at once on one downstream HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS). @default 1000 */
  readonly h2MaxConcurrentStreams: number;
  /** A downstream HTTP/2 connection with no frames for this long is closed (GOAWAY). @default 300000 */
  readonly h2IdleTimeoutMs: number;
}

export const DEFAULT_PROXY_LIMITS: ProxyLimits = Object.freeze({
  maxHeadBytes: 65536,
  maxHeaders: 100,
  maxRetryBodyBytes: 65536,
  maxConnections: 10_000,
  h2MaxConcurrentStreams: 1000,
  h2IdleTimeoutMs: 300_000,
});
