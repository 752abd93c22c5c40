// mesh-mux/1 frames: the wire format of HTTP/1.1 carried between agents multiplexed on one mTLS connection (docs/mux.md).

import { MeshError } from '../../errors';

/** The ALPN id agents offer for multiplexed agent-to-agent HTTP/1.1. */
export const MUX_ALPN = 'mesh-mux/1';

/** type (1 byte), stream id (4), payload length (4). */
export const FRAME_HEADER_BYTES = 9;

export const enum FrameType {
  /** Bytes of the stream (HTTP/1.1 as it is). */
  Data = 0,
  /** The sender will send no more on this stream (a TCP FIN). */
  Fin = 1,
  /** The stream is gone, both ways (a TCP RST). */
  Reset = 2,
  /** The receiver took this many more bytes of the stream: a 4-byte increment of the sender's window. */
  Window = 3,
}

/** Bytes a sender may have in flight on one stream before the receiver credits them back. */
export const STREAM_WINDOW_BYTES = 256 * 1024;

/** Largest payload of one frame: a window's worth. */
export const MAX_FRAME_PAYLOAD = STREAM_WINDOW_BYTES;

/** A frame header (and, for a Window frame, its increment) as one buffer. */
export function frameHeader(type: FrameType, stream: number, length: number): Buffer {
  const h = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  h[0] = type;
  h.writeUInt32BE(stream, 1);
  h.writeUInt32BE(length, 5);
  return h;
}

/** A Window frame granting `increment` bytes. */
export function windowFrame(stream: number, increment: number): Buffer {
  const f = Buffer.allocUnsafe(FRAME_HEADER_BYTES + 4);
  f[0] = FrameType.Window;
  f.writeUInt32BE(stream, 1);
  f.writeUInt32BE(4, 5);
  f.writeUInt32BE(increment, 9);
  return f;
}

/** Receives frames parsed from the connection's bytes. */
export interface FrameSink {
  onData(stream: number, payload: Buffer): void;
  onFin(stream: number): void;
  onReset(stream: number): void;
  onWindow(stream: number, increment: number): void;
}

/**
 * Splits the connection's bytes into frames, however they were cut into reads. A frame a peer could not have meant
 * (unknown type, stream 0, a payload over MAX_FRAME_PAYLOAD, a Window frame of the wrong size or of 0) is a
 * MESH_ERR_MUX_PROTOCOL, after which the connection must be closed.
 */
export class FrameReader {
  private rest: Buffer | null = null;

  constructor(private readonly sink: FrameSink) {}

  /** @throws MeshError MESH_ERR_MUX_PROTOCOL */
  push(chunk: Buffer): void {
    const b = this.rest === null ? chunk : Buffer.concat([this.rest, chunk]);
    this.rest = null;
    let off = 0;
    while (b.length - off >= FRAME_HEADER_BYTES) {
      const type = b[off]!;
      const stream = b.readUInt32BE(off + 1);
      const length = b.readUInt32BE(off + 5);
      if (stream === 0) throw protocolError('a frame on stream 0');
      if (type > FrameType.Window) throw protocolError(`unknown frame type ${type}`);
      if (length > MAX_FRAME_PAYLOAD) throw protocolError(`a frame of ${length} bytes (at most ${MAX_FRAME_PAYLOAD})`);
      if ((type === FrameType.Fin || type === FrameType.Reset) && length !== 0) throw protocolError(`a ${type === FrameType.Fin ? 'FIN' : 'RESET'} frame with a payload`);
      if (type === FrameType.Window && length !== 4) throw protocolError('a WINDOW frame whose payload is not 4 bytes');
      if (b.length - off - FRAME_HEADER_BYTES < length) break;
      const start = off + FRAME_HEADER_BYTES;
      off = start + length;
      if (type === FrameType.Data) this.sink.onData(stream, b.subarray(start, off));
      else if (type === FrameType.Fin) this.sink.onFin(stream);
      else if (type === FrameType.Reset) this.sink.onReset(stream);
      else {
        const inc = b.readUInt32BE(start);
        if (inc === 0) throw protocolError('a WINDOW frame of 0 bytes');
        this.sink.onWindow(stream, inc);
      }
    }
    if (off < b.length) this.rest = off === 0 ? b : b.subarray(off);
  }
}

export function protocolError(what: string): MeshError {
  return new MeshError('MESH_ERR_MUX_PROTOCOL', `mesh-mux/1: ${what}`);
}
