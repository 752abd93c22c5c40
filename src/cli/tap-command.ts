// `mesh-agent tap`: live request summaries from the agents that carry matching traffic, streamed through the server.

import type { Command } from 'commander';
import { request } from 'undici';
import { MeshError } from '../errors';
import { adminTarget, answerOf, type AdminFlags } from './admin-client';
import { adminOptions, examples, output } from './command-helpers';

interface TapFlags extends AdminFlags {
  to?: string;
  from?: string;
  path?: string;
  count?: string;
  output: string;
}

/** One request line of the stream. */
interface TapLine {
  type: 'started' | 'request' | 'dropped';
  agents?: number;
  ready?: number;
  count?: number;
  agent?: string;
  start_time?: string;
  reporter?: string;
  source_workload?: string;
  destination_service?: string;
  method?: string;
  path?: string;
  response_code?: number;
  response_flags?: string;
  duration_ms?: number;
  protocol?: string;
}

/** A request as one text line: time, who called whom, what, the answer, and which side reported it. */
export function tapText(l: TapLine): string {
  const time = (l.start_time ?? '').slice(11, 23);
  const what = l.protocol === 'tcp' ? 'TCP connection' : `${l.method ?? ''} ${l.path ?? ''} ${l.response_code ?? 0}`;
  return `${time} ${l.source_workload ?? '?'} -> ${l.destination_service ?? '?'} ${what} ${l.duration_ms ?? 0}ms flags=${l.response_flags ?? '-'} (${l.reporter === 'source' ? 'caller' : 'callee'}'s agent ${l.agent ?? '?'})`;
}

export function addTapCommand(program: Command): void {
  adminOptions(
    program
      .command('tap')
      .description("stream live request summaries from the agents carrying matching traffic (through the server's admin API); Ctrl-C stops")
      .option('--to <service>', 'only requests to this service (name or name.namespace)')
      .option('--from <service>', 'only requests from this workload (name or name.namespace)')
      .option('--path <prefix>', 'only requests whose path starts with this')
      .option('--count <n>', 'stop after this many requests')
      .addOption(output())
      .addHelpText('after', examples(['mesh-agent tap --to api', 'mesh-agent tap --from web --to api --path /v1/', 'mesh-agent tap --to api -o json | jq .response_code', 'mesh-agent tap --to api --count 10'])),
  ).action(async (opts: TapFlags) => {
    const limit = opts.count === undefined ? Infinity : Number(opts.count);
    if (!(limit > 0 && (limit === Infinity || Number.isInteger(limit)))) throw new MeshError('MESH_ERR_USAGE', `--count: got ${JSON.stringify(opts.count)}, expected a positive integer`);
    const { url, token } = adminTarget(opts);
    const q = new URLSearchParams();
    if (opts.to) q.set('to', opts.to);
    if (opts.from) q.set('from', opts.from);
    if (opts.path) q.set('path', opts.path);
    const stop = new AbortController();
    process.once('SIGINT', () => stop.abort());
    let res;
    try {
      res = await request(`${url}/v1/tap?${q}`, { headers: { authorization: `Bearer ${token}` }, signal: stop.signal, bodyTimeout: 0 });
    } catch (err) {
      throw new MeshError('MESH_ERR_SERVER_UNREACHABLE', `cannot reach the admin API at ${url}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message} (is "mesh-agent server" running? set --admin or MESH_ADMIN_ADDR)`);
    }
    if (res.statusCode !== 200) answerOf(url, res.statusCode, await res.body.text());
    let seen = 0;
    let rest = '';
    try {
      for await (const chunk of res.body) {
        rest += (chunk as Buffer).toString('utf8');
        let nl: number;
        while ((nl = rest.indexOf('\n')) >= 0) {
          const l = JSON.parse(rest.slice(0, nl)) as TapLine;
          rest = rest.slice(nl + 1);
          if (l.type === 'started') process.stderr.write(`tapping ${l.agents} agent(s) (${l.ready} started)\n`);
          else if (l.type === 'dropped') process.stderr.write(`(${l.count} request(s) dropped to keep the tap bounded)\n`);
          else {
            process.stdout.write(opts.output === 'json' ? `${JSON.stringify(l)}\n` : `${tapText(l)}\n`);
            if (++seen >= limit) {
              stop.abort();
              return;
            }
          }
        }
      }
    } catch (err) {
      if (!stop.signal.aborted) throw new MeshError('MESH_ERR_SERVER_UNREACHABLE', `the tap stream from ${url} broke: ${(err as Error).message}`);
    }
  });
}
