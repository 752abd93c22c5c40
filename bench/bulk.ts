// TCP bulk transfer for the benchmark: a sink that counts bytes and a source that sends N MiB and times it.
// Run: node dist/bench/bulk.js sink PORT              -- prints "listening PORT"; per connection, reads an 8-byte length,
//                                                      then that many bytes, then answers one byte
//      node dist/bench/bulk.js source PORT MIB [RUNS] -- per run one connection: sends MIB MiB, waits for the answer;
//                                                      prints "mib=.. runs=.. MiB/s median=.. min=.. max=.."
// The answer byte makes the time cover delivery to the sink, not just the local socket buffers, without half-close.

import { connect, createServer, type Socket } from 'node:net';

const CHUNK = Buffer.alloc(256 * 1024, 0x61);

function fail(message: string): never {
  console.error(message);
  process.exit(2);
}

function portArg(s: string | undefined): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n <= 0 || n > 65535) fail(`bad port "${s ?? ''}"`);
  return n;
}

/** Counts each connection's bytes against the length it announced; answers 1 byte once all arrived. */
function sink(port: number): void {
  const server = createServer((sock: Socket) => {
    let want = -1;
    let got = 0;
    let head = Buffer.alloc(0);
    sock.on('error', () => {});
    sock.on('data', (c: Buffer) => {
      if (want < 0) {
        head = Buffer.concat([head, c]);
        if (head.length < 8) return;
        want = Number(head.readBigUInt64BE(0));
        got = head.length - 8;
      } else got += c.length;
      if (got >= want) sock.end('k');
    });
  });
  server.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
  process.on('SIGTERM', () => process.exit(0));
}

/** One connection: the length, then `bytes` bytes as fast as the socket takes them; resolves with seconds until the answer. */
function sendOnce(port: number, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const sock = connect(port, '127.0.0.1');
    let sent = 0;
    const pump = (): void => {
      while (sent < bytes) {
        const n = Math.min(CHUNK.length, bytes - sent);
        sent += n;
        if (!sock.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) return void sock.once('drain', pump);
      }
    };
    sock.once('connect', () => {
      const head = Buffer.alloc(8);
      head.writeBigUInt64BE(BigInt(bytes));
      sock.write(head);
      pump();
    });
    sock.once('data', () => {
      resolve(Number(process.hrtime.bigint() - t0) / 1e9);
      sock.destroy();
    });
    sock.once('error', reject);
    sock.once('close', () => reject(new Error(`connection to ${port} closed before the sink answered (${sent} of ${bytes} bytes sent)`)));
  });
}

async function source(port: number, mib: number, runs: number): Promise<void> {
  const rates: number[] = [];
  for (let i = 0; i < runs; i++) rates.push(mib / (await sendOnce(port, mib * 1024 * 1024)));
  rates.sort((a, b) => a - b);
  const f = (x: number): string => x.toFixed(0);
  console.log(`mib=${mib} runs=${runs} MiB/s median=${f(rates[Math.floor(runs / 2)])} min=${f(rates[0])} max=${f(rates[runs - 1])}`);
}

const [mode, p, mibArg, runsArg] = process.argv.slice(2);
if (mode === 'sink') sink(portArg(p));
else if (mode === 'source') {
  const mib = Number(mibArg);
  const runs = Number(runsArg ?? 3);
  if (!(mib > 0) || !Number.isInteger(runs) || runs < 1) fail(`usage: bulk.js source PORT MIB [RUNS]; got MIB "${mibArg ?? ''}", RUNS "${runsArg ?? ''}"`);
  source(portArg(p), mib, runs).catch((e: Error) => fail(e.message));
} else fail('usage: bulk.js sink PORT | bulk.js source PORT MIB [RUNS]');
