// `mesh-agent explain`: what the mesh does with one request, from the server's current policy (or a file), computed by
// the same compiled-policy code the agents run.

import type { Command } from 'commander';
import { MeshError } from '../errors';
import { compilePolicy, explainRequest, parsePolicyText, readPolicyFile, type ExplainResult, type PolicyDocument } from '../policy';
import { adminCall, type AdminFlags } from './admin-client';
import { adminOptions, examples, json, output } from './command-helpers';
import type { DocumentList } from './policy-output';

interface ExplainFlags extends AdminFlags {
  from: string;
  fromNs: string;
  to: string;
  toNs: string;
  port?: string;
  header: string[];
  label: string[];
  policy?: string;
  output: string;
}

/** Adds `explain` to the program. */
export function addExplainCommand(program: Command): void {
  adminOptions(
    program
      .command('explain')
      .description("show what the mesh does with one request: the VirtualService rule, destinations and subsets, timeouts, retries, faults, the destination's mTLS mode and the authorization decision (from the server's current policy, or --policy FILE)")
      .argument('[method]', 'HTTP method; without one, a TCP connection is explained')
      .argument('[path]', 'request path (with query)', '/')
      .requiredOption('--from <service>', 'the calling service')
      .option('--from-ns <namespace>', "the calling service's namespace", 'default')
      .requiredOption('--to <service>', 'the destination service')
      .option('--to-ns <namespace>', "the destination's namespace", 'default')
      .option('--port <port>', "the port the destination's app listens on (PeerAuthentication / AuthorizationPolicy ports)")
      .option('-H, --header <field>', 'a request header "name: value" (repeatable)', (v: string, all: string[]) => [...all, v], [] as string[])
      .option('-l, --label <label>', 'a label of the calling service "key=value", besides app (repeatable)', (v: string, all: string[]) => [...all, v], [] as string[])
      .option('--policy <file>', 'explain with this policy file instead of the server\'s current version')
      .addOption(output())
      .addHelpText(
        'after',
        examples([
          'mesh-agent explain --from web --to reviews GET /reviews/1 -H "end-user: jason"',
          'mesh-agent explain --from web --to db --port 5432',
          'mesh-agent explain --from web --to api --policy ./policy.yaml POST /admin -o json',
        ]),
      ),
  ).action(async (method: string | undefined, path: string, opts: ExplainFlags) => {
    const documents = opts.policy ? readPolicyFile(opts.policy) : await serverDocuments(opts);
    const result = explainRequest(compilePolicy(documents), {
      from: { name: opts.from, namespace: opts.fromNs },
      fromLabels: pairs(opts.label, '=', '--label'),
      to: { name: opts.to, namespace: opts.toNs },
      port: opts.port === undefined ? 0 : portOf(opts.port),
      ...(method ? { method: method.toUpperCase(), path } : {}),
      headers: Object.fromEntries(Object.entries(pairs(opts.header, ':', '--header')).map(([k, v]) => [k.toLowerCase(), v])),
    });
    if (opts.output === 'json') json(result);
    else process.stdout.write(renderExplain(result));
  });
}

async function serverDocuments(opts: AdminFlags): Promise<PolicyDocument[]> {
  const list = (await adminCall(opts, 'GET', '/v1/policy')) as unknown as DocumentList;
  return list.documents.flatMap((d) => [...parsePolicyText(d.source, `${d.kind} ${d.namespace}/${d.name} (version ${d.version})`)]);
}

function pairs(items: readonly string[], sep: string, flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const i = item.indexOf(sep);
    if (i <= 0) throw new MeshError('MESH_ERR_USAGE', `${flag} ${JSON.stringify(item)}: expected "name${sep}value"`);
    out[item.slice(0, i).trim()] = item.slice(i + 1).trim();
  }
  return out;
}

function portOf(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new MeshError('MESH_ERR_USAGE', `--port ${JSON.stringify(text)}: expected a port from 1 to 65535`);
  return n;
}

/** The text form: one block per question the request raises. */
export function renderExplain(r: ExplainResult): string {
  const q = r.request;
  const lines = [`${q.protocol === 'http' ? `${q.method} ${q.path}` : 'TCP connection'} from ${q.from} to ${q.to}${q.port ? ` (port ${q.port})` : ''}`, ''];
  const route = r.route;
  lines.push(`route:          ${route.source}${route.rule !== null ? ` http[${route.rule}]${route.name ? ` "${route.name}"` : ''}` : ''} -> ${route.action}${route.detail ? ` (${route.detail})` : ''}`);
  for (const d of route.destinations) {
    const subset = d.subset ? ` subset ${d.subset}${d.subsetLabels ? ` ${JSON.stringify(d.subsetLabels)}` : ' (not defined: 503 UH)'}` : '';
    lines.push(`  destination:  ${d.service}${subset} weight ${d.weight}, ${d.loadBalancer}${d.ownPolicy ? ' (own cluster)' : ''}`);
  }
  if (q.protocol === 'http') {
    lines.push(`timeout:        ${route.timeoutMs ? `${route.timeoutMs} ms` : 'none'}`);
    lines.push(`retries:        ${route.retries.attempts ? `${route.retries.attempts} on ${route.retries.retryOn.join(',')}${route.retries.perTryTimeoutMs ? `, ${route.retries.perTryTimeoutMs} ms per try` : ''}` : 'none'}`);
    const f = route.fault;
    lines.push(`fault:          ${f ? [f.delay ? `delay ${f.delay.ms} ms for ${f.delay.percent}%` : '', f.abort ? `abort ${f.abort.httpStatus ?? `grpc ${f.abort.grpcStatus}`} for ${f.abort.percent}%` : ''].filter(Boolean).join(', ') : 'none'}`);
  }
  lines.push(`mTLS:           ${r.mtls.mode} (${r.mtls.source})`);
  const a = r.authorization;
  lines.push(`authorization:  ${a.allowed ? 'ALLOW' : 'DENY'} (${a.reason}${a.by ? `: ${a.by}` : ''})`);
  if (a.audit.length > 0) lines.push(`  audit:        ${a.audit.join(', ')}`);
  if (a.dryRun) lines.push(`  dry run:      would ${a.dryRun.allowed ? 'allow' : 'deny'}${a.dryRun.by ? ` (${a.dryRun.by})` : ''}`);
  return `${lines.join('\n')}\n`;
}
