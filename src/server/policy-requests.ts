// The admin API's policy requests (apply, delete, rollback, get, history), checked field by field at the edge.

import { MeshError } from '../errors';
import { POLICY_KINDS } from '../policy';
import { parseJson } from '../protocol';
import type { PolicyKey } from '../store';
import type { PolicyFile } from './policy-service';

const bad = (why: string): MeshError => new MeshError('MESH_ERR_BAD_REQUEST', why);

/** The largest apply body: many files of YAML. Other requests are small. */
export const MAX_APPLY_BODY_BYTES = 8 * 1024 * 1024;

function object(text: string, what: string, known: readonly string[]): Record<string, unknown> {
  const v = text.trim() === '' ? undefined : parseJson(text, what);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(`${what} must be a JSON object`);
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!known.includes(k)) throw bad(`${what}: unknown field "${k}" (known: ${known.join(', ')})`);
  return o;
}

function dryRun(o: Record<string, unknown>, what: string): boolean {
  if (o.dryRun !== undefined && typeof o.dryRun !== 'boolean') throw bad(`${what}.dryRun: got ${JSON.stringify(o.dryRun)}, expected true or false`);
  return o.dryRun === true;
}

function kind(v: unknown, what: string): string {
  if (typeof v !== 'string' || !(POLICY_KINDS as readonly string[]).includes(v)) throw bad(`${what}: got ${JSON.stringify(v)}, expected one of ${POLICY_KINDS.join(', ')}`);
  return v;
}

function name(v: unknown, what: string, max: number): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > max) throw bad(`${what}: got ${JSON.stringify(v)}, expected a non-empty string of at most ${max} characters`);
  return v;
}

/** `{files: [{name, text}], dryRun?}`. */
export function parseApplyRequest(text: string): { files: PolicyFile[]; dryRun: boolean } {
  const o = object(text, 'apply request', ['files', 'dryRun']);
  if (!Array.isArray(o.files) || o.files.length === 0) throw bad('apply request.files: expected a non-empty list of {"name": "...", "text": "..."}');
  if (o.files.length > 10_000) throw bad(`apply request.files: ${o.files.length} files, at most 10000 are accepted`);
  const files = o.files.map((f: unknown, i) => {
    const at = `apply request.files[${i}]`;
    if (typeof f !== 'object' || f === null || Array.isArray(f)) throw bad(`${at} must be a JSON object {"name": "...", "text": "..."}`);
    const file = f as Record<string, unknown>;
    for (const k of Object.keys(file)) if (k !== 'name' && k !== 'text') throw bad(`${at}: unknown field "${k}" (known: name, text)`);
    if (typeof file.text !== 'string') throw bad(`${at}.text: expected the file's text as a string`);
    return { name: name(file.name, `${at}.name`, 1024), text: file.text };
  });
  return { files, dryRun: dryRun(o, 'apply request') };
}

/** `{kind, name, namespace?, dryRun?}`. */
export function parseDeleteRequest(text: string): { key: PolicyKey; dryRun: boolean } {
  const o = object(text, 'delete request', ['kind', 'namespace', 'name', 'dryRun']);
  return {
    key: { kind: kind(o.kind, 'delete request.kind'), namespace: o.namespace === undefined ? 'default' : name(o.namespace, 'delete request.namespace', 63), name: name(o.name, 'delete request.name', 253) },
    dryRun: dryRun(o, 'delete request'),
  };
}

/** `{to, dryRun?}`. */
export function parseRollbackRequest(text: string): { to: number; dryRun: boolean } {
  const o = object(text, 'rollback request', ['to', 'dryRun']);
  if (!Number.isSafeInteger(o.to) || (o.to as number) < 0) throw bad(`rollback request.to: got ${JSON.stringify(o.to)}, expected a version number (0 or more)`);
  return { to: o.to as number, dryRun: dryRun(o, 'rollback request') };
}

/** The query of GET /v1/policy and /v1/policy/history: `kind`, `namespace`, `name` (history: `limit`). */
export function parsePolicyQuery(query: URLSearchParams, what: string, withLimit: boolean): { filter: Partial<PolicyKey>; limit: number } {
  const known = ['kind', 'namespace', 'name', ...(withLimit ? ['limit'] : [])];
  for (const k of query.keys()) if (!known.includes(k)) throw bad(`${what}: unknown query parameter "${k}" (known: ${known.join(', ')})`);
  const get = (k: string): string | undefined => query.get(k) ?? undefined;
  const filter: Partial<PolicyKey> = {
    ...(get('kind') !== undefined ? { kind: kind(get('kind'), `${what} kind`) } : {}),
    ...(get('namespace') !== undefined ? { namespace: name(get('namespace'), `${what} namespace`, 63) } : {}),
    ...(get('name') !== undefined ? { name: name(get('name'), `${what} name`, 253) } : {}),
  };
  if (filter.name !== undefined && filter.kind === undefined) throw bad(`${what}: name needs a kind`);
  const limitText = get('limit') ?? '100';
  const limit = Number(limitText);
  if (!/^\d+$/.test(limitText) || limit < 1 || limit > 10_000) throw bad(`${what} limit: got ${JSON.stringify(limitText)}, expected an integer from 1 to 10000`);
  return { filter, limit };
}
