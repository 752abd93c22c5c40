// One stream of a mesh-mux/1 connection: behaves as the socket of one HTTP/1.1 connection (a ByteStream), with a
// window per direction for backpressure.

import { EventEmitter } from 'node:events';
import type { ByteStream } from '../byte-stream';
import { protocolError, STREAM_WINDOW_BYTES } from './mux-frames';

/** What a stream needs of its connection. */
export interface StreamCarrier {
  readonly remoteAddress: string | undefined;
  /** True while the connection's socket refuses more bytes (its write returned false and it has not drained). */
  readonly congested: boolean;
  /** True once the connection takes no new requests (closed or retired): its idle streams are not handed out again. */
  readonly retired: boolean;
  sendData(stream: number, payload: Buffer): void;
  sendFin(stream: number): void;
  sendReset(stream: number): void;
  sendWindow(stream: number, increment: number): void;
  /** The stream is closed: forget it. */
  forget(stream: number): void;
}

/** A window is credited back once this much of it was taken by the receiver (fewer Window frames). */
const CREDIT_AT = STREAM_WINDOW_BYTES / 2;

export class MuxStream extends EventEmitter implements ByteStream {
  readonly remoteAddress: string | undefined;
  /** Bytes the peer still takes on this stream before it credits some back. */
  private sendWindow = STREAM_WINDOW_BYTES;
  /** Bytes written beyond the window, in order. */
  private outbox: Buffer[] = [];
  private outboxBytes = 0;
  private finSent = false;
  private ended = false;
  private needDrain = false;
  private paused = false;
  /** Bytes received while paused, in order. */
  private inbox: Buffer[] = [];
  /** Bytes received and not yet credited back (at most a window, or the peer broke the protocol). */
  private inFlight = 0;
  /** Bytes handed to the reader and not yet credited back. */
  private taken = 0;
  private finReceived = false;
  private endEmitted = false;
  private flushScheduled = false;
  closed = false;

  constructor(
    readonly id: number,
    private readonly carrier: StreamCarrier,
    /** Like net's allowHalfOpen: false ends this side when the peer's FIN is read (a client socket), true leaves it open. */
    private readonly allowHalfOpen: boolean,
  ) {
    super();
    this.remoteAddress = carrier.remoteAddress;
  }

  /** A pooled stream is handed out again only while its connection takes new requests. */
  get reusable(): boolean {
    return !this.closed && !this.carrier.retired;
  }

  write(chunk: Buffer): boolean {
    if (this.closed || this.ended) return false;
    if (chunk.length > 0) {
      if (this.outboxBytes === 0 && chunk.length <= this.sendWindow) {
        this.sendWindow -= chunk.length;
        this.carrier.sendData(this.id, chunk);
      } else {
        this.outbox.push(chunk);
        this.outboxBytes += chunk.length;
        this.sendOutbox();
      }
    }
    if (this.outboxBytes === 0 && !this.carrier.congested) return true;
    this.needDrain = true;
    return false;
  }

  end(chunk?: Buffer): this {
    if (chunk) this.write(chunk);
    if (this.ended || this.closed) return this;
    this.ended = true;
    if (this.outboxBytes === 0) this.sendFin();
    return this;
  }

  /** Gone both ways at once: the peer is told with a Reset unless both sides had finished. */
  destroy(): this {
    if (this.closed) return this;
    if (!(this.finSent && this.finReceived)) this.carrier.sendReset(this.id);
    this.teardown();
    return this;
  }

  pause(): this {
    this.paused = true;
    return this;
  }

  resume(): this {
    this.paused = false;
    // Like a socket, what was held back arrives later, not inside the caller's resume().
    if ((this.inbox.length > 0 || (this.finReceived && !this.endEmitted)) && !this.flushScheduled) {
      this.flushScheduled = true;
      process.nextTick(() => this.flushInbox());
    }
    return this;
  }

  /** Writes of one event-loop turn leave together anyway (MuxSession batches them): nothing to do. */
  cork(): void {}
  uncork(): void {}

  /** DATA from the peer. @throws MeshError MESH_ERR_MUX_PROTOCOL when the peer sent past the window it was given */
  onData(payload: Buffer): void {
    if (this.closed || payload.length === 0) return; // an empty DATA frame only opens the stream
    this.inFlight += payload.length;
    if (this.inFlight > STREAM_WINDOW_BYTES) throw protocolError(`stream ${this.id} sent ${this.inFlight} bytes on a window of ${STREAM_WINDOW_BYTES}`);
    if (this.paused || this.inbox.length > 0) this.inbox.push(payload);
    else this.deliver(payload);
  }

  onFin(): void {
    if (this.closed) return;
    this.finReceived = true;
    if (!this.paused && this.inbox.length === 0) this.emitEnd();
  }

  /** The peer reset the stream, or the connection under it is gone. */
  onReset(): void {
    this.teardown();
  }

  onWindow(increment: number): void {
    if (this.closed) return;
    this.sendWindow += increment;
    this.sendOutbox();
    this.drained();
  }

  /** The connection took bytes again: tell a writer that waited. */
  drained(): void {
    if (this.needDrain && this.outboxBytes === 0 && !this.carrier.congested && !this.closed) {
      this.needDrain = false;
      this.emit('drain');
    }
  }

  private deliver(payload: Buffer): void {
    this.emit('data', payload);
    this.taken += payload.length;
    if (this.taken >= CREDIT_AT && !this.closed) {
      this.carrier.sendWindow(this.id, this.taken);
      this.inFlight -= this.taken;
      this.taken = 0;
    }
  }

  private flushInbox(): void {
    this.flushScheduled = false;
    while (!this.paused && !this.closed && this.inbox.length > 0) this.deliver(this.inbox.shift()!);
    if (!this.paused && this.finReceived && this.inbox.length === 0) this.emitEnd();
  }

  private emitEnd(): void {
    if (this.endEmitted || this.closed) return;
    this.endEmitted = true;
    this.emit('end');
    if (!this.allowHalfOpen) this.end();
    this.closeIfDone();
  }

  private sendOutbox(): void {
    while (this.outbox.length > 0 && this.sendWindow > 0) {
      const first = this.outbox[0]!;
      const n = Math.min(first.length, this.sendWindow);
      if (n === first.length) this.outbox.shift();
      else this.outbox[0] = first.subarray(n);
      this.outboxBytes -= n;
      this.sendWindow -= n;
      this.carrier.sendData(this.id, n === first.length ? first : first.subarray(0, n));
    }
    if (this.ended && this.outboxBytes === 0) this.sendFin();
  }

  private sendFin(): void {
    if (this.finSent) return;
    this.finSent = true;
    this.carrier.sendFin(this.id);
    this.closeIfDone();
  }

  private closeIfDone(): void {
    if (this.finSent && this.endEmitted) this.teardown();
  }

  private teardown(): void {
    if (this.closed) return;
    this.closed = true;
    this.outbox = [];
    this.outboxBytes = 0;
    this.inbox = [];
    this.carrier.forget(this.id);
    process.nextTick(() => this.emit('close'));
  }
}
