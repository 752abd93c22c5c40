// Joins two sockets byte for byte in both directions, passing half-closes along and tearing both down on error.

import type { Duplex } from 'node:stream';

/** Counters of one piped connection. */
export interface PipeStats {
  bytesDownToUp: number;
  bytesUpToDown: number;
}

/**
 * Pipes `down` <-> `up`. A FIN on one side ends the other's writable side (sockets must allow half-open);
 * an error or abrupt close on either side destroys both. `onClose` runs once, when both are done.
 */
export function pipeBoth(down: Duplex, up: Duplex, onClose?: (stats: PipeStats, err?: Error) => void): PipeStats {
  const stats: PipeStats = { bytesDownToUp: 0, bytesUpToDown: 0 };
  let closed = 0;
  let failure: Error | undefined;
  const finish = (): void => {
    if (++closed === 2) onClose?.(stats, failure);
  };
  const fail = (err: Error): void => {
    failure ??= err;
    down.destroy();
    up.destroy();
  };
  down.on('data', (c: Buffer) => (stats.bytesDownToUp += c.length));
  up.on('data', (c: Buffer) => (stats.bytesUpToDown += c.length));
  down.pipe(up);
  up.pipe(down);
  down.on('error', fail);
  up.on('error', fail);
  // A side closed before both ends finished cleanly: nothing more can flow, so release the other.
  down.on('close', () => {
    if (!up.destroyed && !(down.readableEnded && down.writableFinished)) up.destroy();
    finish();
  });
  up.on('close', () => {
    if (!down.destroyed && !(up.readableEnded && up.writableFinished)) down.destroy();
    finish();
  });
  return stats;
}
