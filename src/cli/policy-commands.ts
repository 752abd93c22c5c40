// The policy commands: apply, get, delete, history and rollback, all clients of the server's admin API.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { MeshError } from '../errors';
import { POLICY_KINDS, type PolicyKind } from '../policy';
import { adminCall, type AdminFlags } from './admin-client';
import { adminOptions, examples, json, output } from './command-helpers';
import { printChangeResult, printDocuments, printDocumentsYaml, printHistory, type ChangeResult, type DocumentList, type HistoryList } from './policy-output';

/** Every spelling `get`, `delete` and `history` accept for a kind: its name, plural and short form, any case. */
const KIND_NAMES = new Map<string, PolicyKind>(
  POLICY_KINDS.flatMap((k) => {
    const lower = k.toLowerCase();
    const short = k.replace(/[a-z]/g, '').toLowerCase();
    return [lower, lower.endsWith('y') ? `${lower.slice(0, -1)}ies` : `${lower}s`, short].map((n) => [n, k] as const);
  }),
);

/** @throws MeshError MESH_ERR_USAGE naming what is accepted */
function policyKind(text: string): PolicyKind {
  const kind = KIND_NAMES.get(text.toLowerCase());
  if (!kind) throw new MeshError('MESH_ERR_USAGE', `unknown kind "${text}": expected one of ${POLICY_KINDS.join(', ')} (or their plurals, or ${POLICY_KINDS.map((k) => k.replace(/[a-z]/g, '').toLowerCase()).join(', ')})`);
  return kind;
}

/** Reads `-f` arguments: a file, every *.yaml/*.yml/*.json of a directory (sorted), or `-` for stdin. */
function readPolicyFiles(paths: readonly string[]): { name: string; text: string }[] {
  const read = (file: string | 0): string => {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      throw new MeshError('MESH_ERR_USAGE', `-f ${file === 0 ? '-' : file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  };
  return paths.flatMap((p) => {
    if (p === '-') return [{ name: 'stdin', text: read(0) }];
    let dir = false;
    try {
      dir = statSync(p).isDirectory();
    } catch {
      // read() reports a missing file
    }
    if (!dir) return [{ name: p, text: read(p) }];
    const names = readdirSync(p)
      .filter((n) => /\.(ya?ml|json)$/.test(n))
      .sort();
    if (names.length === 0) throw new MeshError('MESH_ERR_USAGE', `-f ${p}: the directory holds no *.yaml, *.yml or *.json file`);
    return names.map((n) => ({ name: join(p, n), text: read(join(p, n)) }));
  });
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

/** Sends a change (apply, delete, rollback) and prints what it did. */
async function change(opts: AdminFlags & { output: string }, path: string, body: unknown): Promise<void> {
  const res = await adminCall(opts, 'POST', path, body);
  if (opts.output === 'json') json(res);
  else printChangeResult(res as unknown as ChangeResult);
}

/** Adds apply, get, delete, history and rollback to the program. */
export function addPolicyCommands(program: Command): void {
  adminOptions(
    program
      .command('apply')
      .description('validate policy documents and store them as the next mesh-wide version, pushed to every agent')
      .option('-f, --filename <path>', 'a YAML/JSON file, a directory (its *.yaml, *.yml and *.json files, sorted) or - for stdin; repeatable', collect, [])
      .option('--dry-run', 'validate and show what would change and which agents it would reach; store nothing')
      .addOption(output())
      .addHelpText(
        'after',
        examples(['mesh-agent apply -f reviews.yaml', 'mesh-agent apply -f policy/ --dry-run', 'cat routes.yaml | mesh-agent apply -f -', 'mesh-agent apply -f vs.yaml -f dr.yaml -o json']),
      ),
  ).action(async (opts: AdminFlags & { filename: string[]; dryRun?: boolean; output: string }) => {
    if (opts.filename.length === 0) throw new MeshError('MESH_ERR_USAGE', 'apply needs at least one -f FILE|DIR|- (see mesh-agent apply --help)');
    await change(opts, '/v1/policy/apply', { files: readPolicyFiles(opts.filename), dryRun: opts.dryRun === true });
  });

  adminOptions(
    program
      .command('get')
      .description('show the documents of the newest policy version: a table, their YAML exactly as applied, or JSON')
      .argument('<kind>', `${POLICY_KINDS.join(', ')} (any case, plural or short: vs, dr, se, pa, ap), or all`)
      .argument('[name]', 'one document (in the namespace of -n, default "default")')
      .option('-n, --namespace <ns>', 'only this namespace (with a name: default "default")')
      .addOption(output(['text', 'yaml', 'json']))
      .addHelpText('after', examples(['mesh-agent get vs', 'mesh-agent get all -o yaml > mesh-policy.yaml', 'mesh-agent get DestinationRule reviews -n shop -o yaml', 'mesh-agent get virtualservices -o json'])),
  ).action(async (kindText: string, name: string | undefined, opts: AdminFlags & { namespace?: string; output: string }) => {
    const query = new URLSearchParams();
    if (kindText.toLowerCase() !== 'all') query.set('kind', policyKind(kindText));
    else if (name) throw new MeshError('MESH_ERR_USAGE', 'get all takes no name');
    const namespace = opts.namespace ?? (name ? 'default' : undefined);
    if (namespace) query.set('namespace', namespace);
    if (name) query.set('name', name);
    const res = (await adminCall(opts, 'GET', `/v1/policy?${query}`)) as unknown as DocumentList;
    if (opts.output === 'json') json(res);
    else if (opts.output === 'yaml') printDocumentsYaml(res);
    else printDocuments(res);
  });

  adminOptions(
    program
      .command('delete')
      .description('remove a document; the rest of the policy becomes the next version')
      .argument('<kind>', `${POLICY_KINDS.join(', ')} (any case, plural or short)`)
      .argument('<name>', "the document's metadata.name")
      .option('-n, --namespace <ns>', "the document's namespace", 'default')
      .option('--dry-run', 'show what would change and which agents it would reach; store nothing')
      .addOption(output())
      .addHelpText('after', examples(['mesh-agent delete vs reviews', 'mesh-agent delete DestinationRule reviews -n shop --dry-run', 'mesh-agent delete ap deny-all -o json'])),
  ).action(async (kindText: string, name: string, opts: AdminFlags & { namespace: string; dryRun?: boolean; output: string }) => {
    await change(opts, '/v1/policy/delete', { kind: policyKind(kindText), namespace: opts.namespace, name, dryRun: opts.dryRun === true });
  });

  adminOptions(
    program
      .command('history')
      .description('list policy versions, newest first: who made each, when, and what changed')
      .argument('[kind/name]', 'only versions that changed this document (in the namespace of -n)')
      .option('-n, --namespace <ns>', 'the namespace of kind/name', 'default')
      .option('--limit <n>', 'at most this many versions', '50')
      .addOption(output())
      .addHelpText('after', examples(['mesh-agent history', 'mesh-agent history VirtualService/reviews', 'mesh-agent history dr/reviews -n shop -o json', 'mesh-agent history --limit 5'])),
  ).action(async (doc: string | undefined, opts: AdminFlags & { namespace: string; limit: string; output: string }) => {
    const query = new URLSearchParams({ limit: opts.limit });
    if (doc) {
      const slash = doc.indexOf('/');
      if (slash <= 0 || slash === doc.length - 1) throw new MeshError('MESH_ERR_USAGE', `history: got "${doc}", expected KIND/NAME such as VirtualService/reviews`);
      query.set('kind', policyKind(doc.slice(0, slash)));
      query.set('namespace', opts.namespace);
      query.set('name', doc.slice(slash + 1));
    }
    const res = (await adminCall(opts, 'GET', `/v1/policy/history?${query}`)) as unknown as HistoryList;
    if (opts.output === 'json') json(res);
    else printHistory(res);
  });

  adminOptions(
    program
      .command('rollback')
      .description('make a new version holding exactly the documents of an earlier one (byte for byte), pushed to every agent')
      .requiredOption('--to <version>', 'the version to restore (0: no documents at all)')
      .option('--dry-run', 'show what would change and which agents it would reach; store nothing')
      .addOption(output())
      .addHelpText('after', examples(['mesh-agent history', 'mesh-agent rollback --to 4', 'mesh-agent rollback --to 4 --dry-run -o json'])),
  ).action(async (opts: AdminFlags & { to: string; dryRun?: boolean; output: string }) => {
    if (!/^\d+$/.test(opts.to)) throw new MeshError('MESH_ERR_USAGE', `--to: got ${JSON.stringify(opts.to)}, expected a version number (see mesh-agent history)`);
    await change(opts, '/v1/policy/rollback', { to: Number(opts.to), dryRun: opts.dryRun === true });
  });
}
