// Where a VirtualService route sends traffic: destinations with weights that add up to 100, and header operations.

import type { FieldReader } from '../config';
import { readHost, readInteger, readStringList, readStringMap } from './fields';
import { LABEL_PATTERN } from './hosts';

/** A service (and optionally a subset and port) traffic is sent to; `host` as written, lower-cased. */
export interface Destination {
  readonly host: string;
  /** A subset name defined by the host's DestinationRule. */
  readonly subset?: string;
  readonly port?: number;
}

/** set / add / remove of HTTP headers, names as written. */
export interface HeaderOperations {
  readonly set: Readonly<Record<string, string>>;
  readonly add: Readonly<Record<string, string>>;
  readonly remove: readonly string[];
}

/** Header operations on the request (before forwarding) and on the response (before returning). */
export interface Headers {
  readonly request?: HeaderOperations;
  readonly response?: HeaderOperations;
}

/** One weighted destination of a route. `weight` is effective: a lone destination without one gets 100. */
export interface RouteDestination {
  readonly destination: Destination;
  readonly weight: number;
  /** HTTP routes only. */
  readonly headers?: Headers;
}

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HEADER_HINT = "a header name (letters, digits and !#$%&'*+-.^_`|~)";

/** Why `name` cannot be a header that policy sets or removes, or undefined. */
function headerOperationProblem(name: string): string | undefined {
  if (!HEADER_NAME.test(name)) return `${JSON.stringify(name)} is not ${HEADER_HINT}`;
  if (name.toLowerCase() === 'host') return 'the Host header cannot be changed here; use rewrite.authority';
  return undefined;
}

/** Reads `destination {host, subset, port.number}`. */
export function readDestination(r: FieldReader): Destination {
  const host = readHost(r, 'host', { required: true });
  const subset = r.has('subset') ? r.string('subset', '', { pattern: LABEL_PATTERN, hint: 'a subset name (lower-case letters, digits and "-")' }) : undefined;
  let port: number | undefined;
  if (r.has('port')) {
    const p = r.object('port');
    port = readInteger(p, 'number', 1, 65535, { required: true });
    p.done();
  }
  r.done();
  return { host, ...(subset ? { subset } : {}), ...(port !== undefined ? { port } : {}) };
}

/** Reads `headers {request, response}` each `{set, add, remove}`. */
export function readHeaders(r: FieldReader): Headers {
  const side = (key: string): HeaderOperations | undefined => {
    if (!r.has(key)) return undefined;
    const o = r.object(key);
    const keyRule = { keyPattern: HEADER_NAME, keyHint: HEADER_HINT };
    const set = readStringMap(o, 'set', keyRule);
    const add = readStringMap(o, 'add', keyRule);
    const remove = readStringList(o, 'remove');
    for (const [k, ops] of [['set', set], ['add', add]] as const) {
      for (const name of Object.keys(ops)) if (name.toLowerCase() === 'host') o.problems.add([...o.path, k, name], headerOperationProblem(name)!);
    }
    remove.forEach((name, i) => {
      const problem = headerOperationProblem(name);
      if (problem) o.problems.add([...o.path, 'remove', i], problem);
    });
    o.done();
    return { set, add, remove };
  };
  const request = side('request');
  const response = side('response');
  r.done();
  return { ...(request ? { request } : {}), ...(response ? { response } : {}) };
}

/**
 * Reads a route's destination list and checks weights: each from 0 to 100; a lone destination may omit its weight
 * (it gets 100); otherwise the weights must add up to 100.
 */
export function readRouteDestinations(r: FieldReader, key: string, opts: { headers: boolean; required: boolean }): RouteDestination[] {
  const items = r.list(key);
  const raw = r.raw(key);
  if (opts.required && (raw === undefined || raw === null)) r.fail(key, 'is required (a list of {destination, weight})');
  else if (opts.required && Array.isArray(raw) && raw.length === 0) r.fail(key, 'must list at least one destination');
  const out: RouteDestination[] = [];
  let sum = 0;
  let weightProblem = false;
  for (const d of items) {
    const destination = d.has('destination') ? readDestination(d.object('destination')) : { host: '' };
    if (!d.has('destination')) d.fail('destination', 'is required (destination: {host: ...})');
    const given = d.has('weight');
    const weight = given ? readInteger(d, 'weight', 0, 100) : undefined;
    if (given && weight === undefined) weightProblem = true;
    const headers = opts.headers && d.has('headers') ? readHeaders(d.object('headers')) : undefined;
    d.done();
    const effective = weight ?? (items.length === 1 && !given ? 100 : 0);
    sum += effective;
    out.push({ destination, weight: effective, ...(headers ? { headers } : {}) });
  }
  if (items.length > 0 && !weightProblem && sum !== 100) {
    const shown = out.map((d) => d.weight).join(' + ');
    const lone = items.length === 1 ? '; a single destination may also leave weight out' : '; a destination without weight counts as 0';
    r.fail(key, `weights add up to ${sum} (${shown}), expected 100${lone}`);
  }
  return out;
}
