// Reads Nomad job files with HashiCorp's HCL parser (@cdktf/hcl2json, docs/adr) and walks the result.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';

/** One HCL block as hcl2json gives it: attributes are values, nested blocks are lists (labelled ones: maps of lists). */
export type Block = Record<string, unknown>;

// Loaded with require, not import: the package's typings reference the DOM lib, which would change the types of
// Node globals (setTimeout, fetch) in the whole compilation.
const hcl2json = require('@cdktf/hcl2json') as { parse(file: string, text: string): Promise<Record<string, unknown>> };

export const NOMAD_DIR = join(__dirname, '..', '..', '..', 'nomad');

/** The job file's text. */
export function jobText(name: string): string {
  return readFileSync(join(NOMAD_DIR, name), 'utf8');
}

/**
 * Parses a job file's text and returns its one job.
 * @throws Error from the parser, with file:line:column, when the text is not HCL
 */
export async function parseJob(file: string, text: string): Promise<{ name: string; job: Block }> {
  const doc = await hcl2json.parse(basename(file), text);
  assert.deepEqual(Object.keys(doc), ['job'], `${file}: the only top-level block is "job"`);
  const jobs = doc.job as Record<string, Block[]>;
  assert.equal(Object.keys(jobs).length, 1, `${file}: one job per file`);
  const [name, list] = Object.entries(jobs)[0]!;
  assert.equal(list.length, 1, `${file}: job "${name}" is declared once`);
  return { name, job: list[0]! };
}

/** The one unlabelled `key { }` block inside `parent`. */
export function block(parent: Block, key: string, where: string): Block {
  const list = parent[key] as Block[] | undefined;
  assert.ok(Array.isArray(list) && list.length === 1, `${where}: exactly one "${key}" block (got ${Array.isArray(list) ? list.length : 0})`);
  return list[0]!;
}

/** Every unlabelled `key { }` block inside `parent` (none: []). */
export function blocks(parent: Block, key: string): Block[] {
  return (parent[key] as Block[] | undefined) ?? [];
}

/** The `key "label" { }` block inside `parent`. */
export function labelled(parent: Block, key: string, label: string, where: string): Block {
  const list = (parent[key] as Record<string, Block[]> | undefined)?.[label];
  assert.ok(Array.isArray(list) && list.length === 1, `${where}: exactly one ${key} "${label}" block`);
  return list[0]!;
}

/** The labels of the `key "label" { }` blocks inside `parent`. */
export function labels(parent: Block, key: string): string[] {
  return Object.keys((parent[key] as Record<string, unknown> | undefined) ?? {});
}

/** A Go duration string ("30s", "1m30s", "500ms") in milliseconds. */
export function goDurationMs(text: unknown, where: string): number {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  const parts = typeof text === 'string' ? [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)] : [];
  assert.ok(parts.length > 0 && parts.map((p) => p[0]).join('') === text, `${where}: got ${JSON.stringify(text)}, expected a Go duration such as "30s"`);
  return parts.reduce((sum, p) => sum + Number(p[1]) * units[p[2]!]!, 0);
}

/**
 * Renders a Nomad template the way Nomad would for the functions the project's jobs use: `{{ env "name" }}`
 * and `{{ with nomadVar "path" }}...{{ .key }}...{{ end }}` (an absent key renders as ""). Any other action is an
 * error, so a job that starts using one makes this helper, and the test, say so.
 */
export function renderTemplate(data: string, env: Record<string, string>, vars: Record<string, Record<string, string>>): string {
  let out = data.replace(/\{\{ with nomadVar "([^"]+)" \}\}([\s\S]*?)\{\{ end \}\}/g, (_, path: string, body: string) => {
    const items = vars[path];
    return items ? body.replace(/\{\{ \.(\w+) \}\}/g, (_m, key: string) => items[key] ?? '') : '';
  });
  out = out.replace(/\{\{ env "([^"]+)" \}\}/g, (_, name: string) => {
    assert.ok(name in env, `template uses env "${name}", which the test does not provide`);
    return env[name]!;
  });
  assert.ok(!out.includes('{{'), `template action the test cannot render: ${out.slice(out.indexOf('{{'), out.indexOf('{{') + 60)}`);
  return out;
}
