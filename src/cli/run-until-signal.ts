// Runs a long-lived component until SIGINT/SIGTERM: first signal drains (close), a second one exits at once.

import { describeError } from '../errors';

/** The lifecycle every long-running part shares. */
export interface Lifecycle {
  start(signal?: AbortSignal): Promise<void>;
  ready(): Promise<void>;
  close(): Promise<void>;
  destroy(err?: Error): void;
}

export async function runUntilSignal(part: Lifecycle, onReady?: () => void): Promise<void> {
  const abort = new AbortController();
  let stopping = false;
  const stop = (sig: NodeJS.Signals): void => {
    if (stopping) {
      process.stderr.write(`${sig} again: exiting now\n`);
      process.exit(130);
    }
    stopping = true;
    process.stderr.write(`${sig}: shutting down\n`);
    void part.close().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`error while shutting down: ${describeError(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  // Output to a closed pipe (`mesh-agent server | head -1`) must not turn into errors that are logged to the same
  // closed pipe, forever: stop writing to a stream once it failed, and keep serving.
  let stderrOk = true;
  process.stdout.on('error', () => {});
  process.stderr.on('error', () => (stderrOk = false));
  const report = (text: string): void => {
    if (stderrOk && !process.stderr.destroyed) process.stderr.write(text);
  };
  // A component bug must not take the node's traffic down silently: log it and keep serving.
  process.on('uncaughtException', (err) => report(`uncaught exception (continuing): ${err.stack ?? err.message}\n`));
  process.on('unhandledRejection', (err) => report(`unhandled rejection (continuing): ${describeError(err)}\n`));
  try {
    await part.start(abort.signal);
  } catch (err) {
    // A half-started part must not keep ports or channels open: stop it, then let the caller report why.
    part.destroy();
    throw err;
  }
  await part.ready();
  onReady?.();
}
