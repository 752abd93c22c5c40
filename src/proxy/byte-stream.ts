// What the HTTP/1.1 path needs of a connection: a TCP or TLS socket, or a stream multiplexed on one (src/proxy/mux/).

/**
 * The part of net.Socket the HTTP/1.1 session and the connection pool use. Events: 'data' (Buffer), 'drain', 'end',
 * 'error', 'close'. A multiplexed stream implements exactly this, so the HTTP/1.1 code runs unchanged over it.
 */
export interface ByteStream {
  readonly remoteAddress?: string | undefined;
  /** False once a pooled connection must not carry another request (a multiplexed one whose connection is retired). */
  readonly reusable?: boolean;
  write(chunk: Buffer): boolean;
  end(): unknown;
  end(chunk: Buffer): unknown;
  destroy(err?: Error): unknown;
  pause(): unknown;
  resume(): unknown;
  cork(): void;
  uncork(): void;
  on(event: 'data', fn: (chunk: Buffer) => void): unknown;
  on(event: 'drain' | 'end' | 'close', fn: () => void): unknown;
  on(event: 'error', fn: (err: Error) => void): unknown;
  once(event: 'close', fn: () => void): unknown;
}
