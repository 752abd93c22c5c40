// Closing a listener without waiting forever: stop accepting, give open connections a grace period, then cut them.

import type { Server } from 'node:net';
import type { Socket } from 'node:net';

/** How long open connections (pooled ones from peers, keep-alive ones from apps) may finish on shutdown. @default 2000 */
export const DRAIN_GRACE_MS = 2000;

/** Tracks a server's connections so `drainAndClose` can end them. */
export function trackConnections(server: Server, event: 'connection' | 'secureConnection' = 'connection'): Set<Socket> {
  const open = new Set<Socket>();
  server.on(event, (s: Socket) => {
    open.add(s);
    s.once('close', () => open.delete(s));
  });
  return open;
}

/** Stops accepting; resolves when every connection closed, cutting those still open after `graceMs`. */
export function drainAndClose(server: Server | undefined, open: Set<Socket>, graceMs = DRAIN_GRACE_MS): Promise<void> {
  if (!server?.listening) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      for (const s of open) s.destroy();
    }, graceMs);
    timer.unref();
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
