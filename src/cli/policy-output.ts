// Text output of the policy commands: what changed and whom it reaches, document tables, documents as applied, history.

import { ago, out, table } from './text-output';

interface Key {
  kind: string;
  namespace: string;
  name: string;
}

/** The admin API's answer to apply, delete and rollback. */
export interface ChangeResult {
  dryRun: boolean;
  created: boolean;
  version: number;
  previousVersion: number;
  changes: (Key & { action: string })[];
  unchanged: Key[];
  agents: { id: string; nodeName: string; connected: boolean }[];
  warnings: string[];
}

/** The admin API's answer to GET /v1/policy. */
export interface DocumentList {
  version: number;
  documents: (Key & { version: number; source: string })[];
}

/** The admin API's answer to GET /v1/policy/history. */
export interface HistoryList {
  version: number;
  versions: { version: number; createdAt: string; actor: string; operation: string; rollbackTo: number | null; changes: (Key & { action: string })[] }[];
}

const doc = (k: Key): string => `${k.kind} ${k.namespace}/${k.name}`;
const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

export function printChangeResult(r: ChangeResult): void {
  if (r.changes.length === 0) {
    out(`no change: policy version ${r.version} already holds ${r.unchanged.length > 0 ? 'these documents' : 'that'}`);
  } else {
    out(r.dryRun ? `dry run: would make policy version ${r.version} (now ${r.previousVersion}); nothing was stored` : `policy version ${r.version} (was ${r.previousVersion})`);
    table(r.changes.map((c) => [`  ${c.action}`, c.kind, `${c.namespace}/${c.name}`]));
  }
  if (r.unchanged.length > 0) out(`  unchanged: ${r.unchanged.map(doc).join(', ')}`);
  for (const w of r.warnings) out(`warning: ${w}`);
  if (r.changes.length === 0) return;
  const verb = r.dryRun ? 'would reach' : 'reaches';
  if (r.agents.length === 0) return void out(`${verb} no agent (none runs a selected service or calls a changed one)`);
  out(`${verb} ${plural(r.agents.length, 'agent')}: ${r.agents.map((a) => `${a.nodeName} (${a.id}${a.connected ? '' : ', disconnected: gets it when it reconnects'})`).join(', ')}`);
}

export function printDocuments(list: DocumentList): void {
  if (list.documents.length === 0) return void out(`no such documents in policy version ${list.version}`);
  table([['KIND', 'NAMESPACE', 'NAME', 'SINCE VERSION'], ...list.documents.map((d) => [d.kind, d.namespace, d.name, String(d.version)])]);
}

/** The documents exactly as applied, as one YAML stream (a marker between two documents where their text has none). */
export function printDocumentsYaml(list: DocumentList): void {
  list.documents.forEach((d, i) => {
    const first = d.source.split('\n').find((l) => l.trim() !== '' && !l.startsWith('#')) ?? '';
    // A directive (%YAML) may only follow a document that was closed with "...".
    const marker = i === 0 || first.startsWith('---') ? '' : first.startsWith('%') ? '...\n' : '---\n';
    process.stdout.write(`${marker}${d.source}${d.source.endsWith('\n') ? '' : '\n'}`);
  });
}

export function printHistory(h: HistoryList): void {
  if (h.versions.length === 0) return void out('no policy versions yet (mesh-agent apply -f FILE makes the first)');
  const sign: Record<string, string> = { added: '+', changed: '~', removed: '-' };
  table([
    ['VERSION', 'WHEN', 'WHO', 'OPERATION', 'CHANGES'],
    ...h.versions.map((v) => [
      String(v.version),
      `${v.createdAt} (${ago(v.createdAt)})`,
      v.actor,
      v.operation === 'rollback' ? `rollback to ${v.rollbackTo}` : v.operation,
      v.changes.map((c) => `${sign[c.action] ?? c.action}${doc(c)}`).join(', '),
    ]),
  ]);
}
