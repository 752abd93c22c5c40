// The Consul STAND-IN (test/consul-standin, not Consul) as a child process of a benchmark, so its CPU and RSS can be
// read apart from the simulated agents'. Forked with an IPC channel: sends {port} once listening; answers "counts"
// with the requests it answered since the last ask and their response bytes, by method and path (ids folded).

import { ServerResponse } from 'node:http';
import { ConsulStandin } from '../test/consul-standin/consul-standin';

const standin = new ConsulStandin();

/** A path with its ids folded: "/v1/kv/mesh/agents/abc" -> "/v1/kv/mesh/agents/…", "/v1/session/renew/<id>" -> "/v1/session/renew/…". */
function foldPath(path: string): string {
  return path
    .replace(/\/(agents|tokens|replicas|versions)\/[^/]+$/, '/$1/…')
    .replace(/^(\/v1\/(?:session\/\w+|agent\/check\/pass|agent\/service\/deregister|health\/service))\/.+$/, '$1/…');
}

/** Requests answered and response body bytes, by method and folded path, since the last "counts". */
let counts: Record<string, { n: number; bytes: number }> = {};

// Every answer of the stand-in ends with res.end(body): count it there.
const end = ServerResponse.prototype.end;
ServerResponse.prototype.end = function (this: ServerResponse, ...args: unknown[]) {
  const url = new URL(this.req.url ?? '/', 'http://standin');
  const key = `${this.req.method} ${foldPath(url.pathname)}${url.searchParams.has('index') ? ' (blocking)' : ''}`;
  const c = (counts[key] ??= { n: 0, bytes: 0 });
  c.n++;
  if (typeof args[0] === 'string' || Buffer.isBuffer(args[0])) c.bytes += Buffer.byteLength(args[0]);
  return (end as (...a: unknown[]) => ServerResponse).apply(this, args);
} as typeof end;

void standin.start(0).then((port) => {
  process.send!({ port });
  process.on('message', (msg) => {
    if (msg !== 'counts') return;
    standin.requests.length = 0; // its own request log, not needed here: keep its memory flat
    process.send!({ counts });
    counts = {};
  });
  process.on('disconnect', () => process.exit(0));
});
