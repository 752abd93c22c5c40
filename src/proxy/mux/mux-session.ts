// One mesh-mux/1 connection between two agents: many streams on one mTLS socket, the frames written in one turn of the
// event loop leaving in one write (one TLS record, one syscall) — the point of it (docs/adr/0017).

import type { TLSSocket } from 'node:tls';
import { describeError } from '../../errors';
import { FrameReader, frameHeader, FrameType, windowFrame, type FrameSink } from './mux-frames';
import { MuxStream, type StreamCarrier } from './mux-stream';

/** Streams open at once on one connection; the dialer opens another connection beyond it, the acceptor refuses more. */
export const MUX_MAX_STREAMS = 1024;

const EMPTY = Buffer.alloc(0);

/** Largest stream id; a dialing side that reaches it opens a new connection. */
const MAX_STREAM_ID = 0xffff_ffff;

export interface MuxSessionOptions {
  /** The accepting side: each stream the peer opens. Absent on the dialing side (the peer may not open streams). */
  readonly onStream?: (stream: MuxStream) => void;
  /** The peer broke the protocol; the connection is closed after this. */
  readonly onProtocolError?: (message: string) => void;
  /** The dialing side closes the connection after it carried no stream for this long. @default 30000 */
  readonly idleCloseMs?: number;
}

export class MuxSession implements StreamCarrier, FrameSink {
  private readonly streams = new Map<number, MuxStream>();
  private readonly reader = new FrameReader(this);
  private parts: Buffer[] = [];
  private bytes = 0;
  private scheduled = false;
  private nextId = 1;
  /** Highest stream id the peer opened (the accepting side): a frame for an id at or below it and unknown is late. */
  private lastPeerId = 0;
  private idleTimer: NodeJS.Timeout | null = null;
  congested = false;
  closed = false;
  /** Takes no new streams; closes once its last one is gone. */
  private isRetired = false;
  /** Frames that arrived for a stream this side closed (or refused): they were sent in vain. */
  lateFrames = 0;
  readonly remoteAddress: string | undefined;

  constructor(
    private readonly socket: TLSSocket,
    private readonly opts: MuxSessionOptions = {},
  ) {
    this.remoteAddress = socket.remoteAddress;
    socket.on('drain', () => {
      this.congested = false;
      for (const s of this.streams.values()) s.drained();
    });
    socket.on('error', () => {});
    // The caller sends no more frames: no stream can finish its side now. What this turn queued goes out, then the
    // close. (Accepting side only: a dialed socket reads through `onread`, and Node reports 'end' for those early.)
    if (opts.onStream) socket.on('end', () => setImmediate(() => socket.end()));
    socket.on('close', () => {
      this.closed = true;
      if (this.idleTimer) clearTimeout(this.idleTimer);
      for (const s of [...this.streams.values()]) s.onReset();
      this.streams.clear();
    });
    this.idle();
  }

  /** Bytes read from the socket (its 'data' event, or Node's `onread` on the dialing side). */
  readonly onBytes = (chunk: Buffer): void => {
    if (this.closed) return;
    try {
      this.reader.push(chunk);
    } catch (err) {
      this.opts.onProtocolError?.(describeError(err));
      this.socket.destroy();
    }
  };

  /** Streams open now. */
  get size(): number {
    return this.streams.size;
  }

  /** Whether the dialing side may open one more stream here. */
  get canOpen(): boolean {
    return !this.retired && this.streams.size < MUX_MAX_STREAMS && this.nextId < MAX_STREAM_ID;
  }

  /** Closed, or retired: takes no new streams (a full connection is not retired: its streams stay reusable). */
  get retired(): boolean {
    return this.closed || this.isRetired;
  }

  /** No new streams from now on (a certificate under it is about to expire): closed when the streams it has are done. */
  retire(): void {
    this.isRetired = true;
    if (this.streams.size === 0) this.close();
  }

  /**
   * A new stream from the dialing side. An empty DATA frame opens it for the peer at once, so the peer sees stream ids
   * in the order they were given out (whichever stream writes first) and can take a lower id than it has seen as late.
   */
  open(): MuxStream {
    const s = new MuxStream(this.nextId++, this, false);
    this.streams.set(s.id, s);
    this.busy();
    this.sendData(s.id, EMPTY);
    return s;
  }

  /** Closes the connection; every stream on it is lost. */
  close(): void {
    this.socket.destroy();
  }

  // StreamCarrier: what the streams send, queued for this turn's write.

  sendData(stream: number, payload: Buffer): void {
    this.queue(frameHeader(FrameType.Data, stream, payload.length), payload);
  }

  sendFin(stream: number): void {
    this.queue(frameHeader(FrameType.Fin, stream, 0));
  }

  sendReset(stream: number): void {
    this.queue(frameHeader(FrameType.Reset, stream, 0));
  }

  sendWindow(stream: number, increment: number): void {
    this.queue(windowFrame(stream, increment));
  }

  forget(stream: number): void {
    this.streams.delete(stream);
    if (this.streams.size > 0) return;
    if (this.isRetired) setImmediate(() => this.close()); // after the frames of this turn are written
    else this.idle();
  }

  // FrameSink: what the peer sent.

  onData(id: number, payload: Buffer): void {
    const s = this.streams.get(id) ?? this.accept(id);
    if (s) s.onData(payload);
    else this.late(id);
  }

  onFin(id: number): void {
    const s = this.streams.get(id) ?? this.accept(id);
    if (s) s.onFin();
    else this.late(id);
  }

  /**
   * DATA or FIN for a stream this side no longer has. Its sender may not know yet (the RESET that closed it crossed
   * these frames) or may never have been told; it is told now, so it never waits for an answer that cannot come.
   */
  private late(id: number): void {
    this.lateFrames++;
    this.sendReset(id);
  }

  onReset(id: number): void {
    this.streams.get(id)?.onReset();
  }

  onWindow(id: number, increment: number): void {
    this.streams.get(id)?.onWindow(increment);
  }

  /** A frame for a stream this side does not know: a new one from the peer, or a late frame of a closed one. */
  private accept(id: number): MuxStream | undefined {
    const onStream = this.opts.onStream;
    if (!onStream) return undefined; // the peer may not open streams on a dialed connection: late frames are dropped
    if (id <= this.lastPeerId) return undefined;
    this.lastPeerId = id;
    if (this.streams.size >= MUX_MAX_STREAMS) {
      this.sendReset(id);
      return undefined;
    }
    const s = new MuxStream(id, this, true);
    this.streams.set(id, s);
    this.busy();
    onStream(s);
    return s;
  }

  private queue(a: Buffer, b?: Buffer): void {
    if (this.closed) return;
    this.parts.push(a);
    this.bytes += a.length;
    if (b) {
      this.parts.push(b);
      this.bytes += b.length;
    }
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  }

  /** Everything queued in this turn, in one write. */
  private readonly flush = (): void => {
    this.scheduled = false;
    if (this.closed || this.parts.length === 0) return;
    const out = Buffer.concat(this.parts, this.bytes);
    this.parts = [];
    this.bytes = 0;
    if (!this.socket.write(out)) this.congested = true;
  };

  private busy(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  /** The dialing side lets a connection with no streams go after a while. */
  private idle(): void {
    if (this.opts.onStream || this.closed || this.idleTimer) return;
    this.idleTimer = setTimeout(() => {
      if (this.streams.size === 0) this.close();
    }, this.opts.idleCloseMs ?? 30_000);
    this.idleTimer.unref();
  }
}
