// What a client speaks, from the first bytes it sends: a TLS ClientHello, the HTTP/2 preface, an HTTP/1 request line, or other TCP.

/** The protocols the inbound port tells apart when some local service takes plaintext. */
export type FirstBytesKind = 'tls' | 'h2c' | 'http1' | 'tcp';

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/** An HTTP/1 request line is looked for this far; a longer first line is not HTTP to us. */
const MAX_REQUEST_LINE = 8192;
const METHOD_START = /^[A-Z][A-Z_-]{0,19}( |$)/;
const REQUEST_LINE = /^[A-Z][A-Z_-]{0,19} \S+ HTTP\/1\.[01]\r?$/;

/**
 * Classifies a connection by its first bytes; undefined while too few have come to tell.
 * TLS: a handshake record (0x16) of TLS 1.x (0x03). h2c: the whole HTTP/2 client preface. HTTP/1: a complete
 * request line `METHOD target HTTP/1.x`. Anything else, and a first line that looks like none of these, is TCP.
 */
export function classifyFirstBytes(buf: Buffer): FirstBytesKind | undefined {
  if (buf.length === 0) return undefined;
  if (buf[0] === 0x16) {
    if (buf.length < 2) return undefined;
    return buf[1] === 0x03 ? 'tls' : 'tcp';
  }
  const n = Math.min(buf.length, H2_PREFACE.length);
  if (buf.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) return buf.length >= H2_PREFACE.length ? 'h2c' : undefined;
  const head = buf.subarray(0, Math.min(buf.length, MAX_REQUEST_LINE)).toString('latin1');
  if (!METHOD_START.test(head)) return /^[A-Z_-]{1,20}$/.test(head) ? undefined : 'tcp';
  const eol = head.indexOf('\n');
  if (eol < 0) return buf.length >= MAX_REQUEST_LINE ? 'tcp' : undefined;
  return REQUEST_LINE.test(head.slice(0, eol)) ? 'http1' : 'tcp';
}
