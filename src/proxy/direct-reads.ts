// Reading a pooled upstream socket without the stream machinery: Node's documented `onread` connect option.

/**
 * The buffer every direct-read socket reads into. A read is handed over (copied out) inside its callback, before
 * the event loop can start another one, so one buffer serves every socket.
 */
const SHARED = Buffer.allocUnsafe(64 * 1024);

/**
 * The `onread` option for net.connect / tls.connect, and where its bytes go. Each chunk skips the Readable stream
 * (push, 'data' event, read-more tick) and arrives as a copy its receiver may keep. pause()/resume() work as usual.
 */
export class DirectReads {
  /** Receives each chunk; set once the receiver exists (the connection object is made after the dial). */
  deliver: (chunk: Buffer) => void = () => {};

  readonly onread = {
    buffer: SHARED,
    callback: (n: number, buf: Buffer): boolean => {
      const chunk = Buffer.allocUnsafe(n);
      buf.copy(chunk, 0, 0, n);
      this.deliver(chunk);
      return true;
    },
  };
}
