// gRPC and plain HTTP/2 on the client side of tests: message framing, one call or exchange on an h2c session, with everything that came back.

import { connect as h2Connect, constants, type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';

const { NGHTTP2_CANCEL } = constants;

/** A gRPC length-prefixed message: flag 0 (not compressed), 4-byte length, payload. Any bytes do as the payload here. */
export function frame(payload: Buffer | string): Buffer {
  const body = Buffer.from(payload);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/** Splits a gRPC body into its messages; reports each as soon as it is complete. */
export class Deframer {
  private buf = Buffer.alloc(0);
  readonly messages: Buffer[] = [];
  constructor(private readonly onMessage: (m: Buffer) => void = () => {}) {}
  push(chunk: Buffer): void {
    this.buf = Buffer.concat([this.buf, chunk]);
    while (this.buf.length >= 5 && this.buf.length >= 5 + this.buf.readUInt32BE(1)) {
      const m = this.buf.subarray(5, 5 + this.buf.readUInt32BE(1));
      this.buf = this.buf.subarray(5 + m.length);
      this.messages.push(m);
      this.onMessage(m);
    }
  }
}

export interface CallResult {
  headers: IncomingHttpHeaders;
  trailers: IncomingHttpHeaders;
  messages: Buffer[];
  /** grpc-status from the trailers, or from the headers of a trailers-only response. */
  status: number | undefined;
  message: string | undefined;
  rstCode: number;
}

const GRPC_HEADERS = { ':method': 'POST', 'content-type': 'application/grpc', te: 'trailers' };

/**
 * One gRPC call on an h2c session to agent A's upstream port. `onMessage` may write more
 * (bidirectional); the request ends after `messages` unless `keepOpen`.
 */
export function call(
  session: ClientHttp2Session,
  path: string,
  messages: (Buffer | string)[],
  opts: { headers?: OutgoingHttpHeaders; keepOpen?: boolean; onMessage?: (m: Buffer, req: ReturnType<ClientHttp2Session['request']>) => void } = {},
): Promise<CallResult> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ...GRPC_HEADERS, ':path': path, ...opts.headers });
    const result: CallResult = { headers: {}, trailers: {}, messages: [], status: undefined, message: undefined, rstCode: 0 };
    const deframer = new Deframer((m) => opts.onMessage?.(m, req));
    const timer = setTimeout(() => {
      req.close(NGHTTP2_CANCEL);
      reject(new Error(`call ${path} timed out: ${JSON.stringify(result)}`));
    }, 10_000);
    req.on('response', (h) => (result.headers = h));
    req.on('trailers', (t) => (result.trailers = t));
    req.on('data', (c: Buffer) => deframer.push(c));
    req.on('error', () => {});
    req.on('close', () => {
      clearTimeout(timer);
      const from = result.trailers['grpc-status'] !== undefined ? result.trailers : result.headers;
      result.status = from['grpc-status'] === undefined ? undefined : Number(from['grpc-status']);
      result.message = from['grpc-message'] as string | undefined;
      result.messages = deframer.messages;
      result.rstCode = req.rstCode ?? 0;
      resolve(result);
    });
    for (const m of messages) req.write(frame(m));
    if (!opts.keepOpen) req.end();
  });
}

/** A plain HTTP/2 exchange: status, headers, body and trailers. */
export function exchange(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body?: Buffer, requestTrailers?: OutgoingHttpHeaders): Promise<{ headers: IncomingHttpHeaders; body: Buffer; trailers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = session.request(headers, requestTrailers ? { waitForTrailers: true } : {});
    if (requestTrailers) req.once('wantTrailers', () => req.sendTrailers(requestTrailers));
    const out = { headers: {} as IncomingHttpHeaders, body: Buffer.alloc(0), trailers: {} as IncomingHttpHeaders };
    const chunks: Buffer[] = [];
    req.on('response', (h) => (out.headers = h));
    req.on('trailers', (t) => (out.trailers = t));
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', reject);
    req.on('end', () => resolve({ ...out, body: Buffer.concat(chunks) }));
    req.end(body);
  });
}

export function h2c(port: number): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = h2Connect(`http://127.0.0.1:${port}`);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}
