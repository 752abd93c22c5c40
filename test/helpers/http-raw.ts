// A raw keep-alive HTTP/1.1 connection, so a test controls exactly which requests share one TCP connection.

import { connect, type Socket } from 'node:net';

export class RawHttpConnection {
  private buf = '';
  private readonly socket: Socket;
  private waiting?: () => void;
  closed = false;

  constructor(port: number) {
    this.socket = connect({ host: '127.0.0.1', port });
    this.socket.on('data', (c: Buffer) => {
      this.buf += c.toString('latin1');
      this.waiting?.();
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.waiting?.();
    });
    this.socket.on('error', () => {});
  }

  /** Sends one GET and resolves with the status and headers of the response (bodies are length-delimited). */
  async get(path: string, timeoutMs = 5000): Promise<{ status: number; headers: Record<string, string>; body: string }> {
    this.socket.write(`GET ${path} HTTP/1.1\r\nhost: mesh\r\n\r\n`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end >= 0) {
        const [statusLine, ...lines] = this.buf.slice(0, end).split('\r\n');
        const headers: Record<string, string> = {};
        for (const l of lines) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
        const len = Number(headers['content-length'] ?? 0);
        if (this.buf.length >= end + 4 + len) {
          const body = this.buf.slice(end + 4, end + 4 + len);
          this.buf = this.buf.slice(end + 4 + len);
          return { status: Number(statusLine!.split(' ')[1]), headers, body };
        }
      }
      if (this.closed) throw new Error('connection closed before a full response');
      if (Date.now() > deadline) throw new Error('no response in time');
      await new Promise<void>((r) => {
        const t = setTimeout(r, deadline - Date.now());
        this.waiting = () => {
          clearTimeout(t);
          r();
        };
      });
    }
  }

  close(): void {
    this.socket.destroy();
  }
}
