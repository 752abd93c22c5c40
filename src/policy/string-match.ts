// Istio's StringMatch (exact | prefix | regex, or presence): parsed and checked once, compiled once, matched per request.

import type { FieldReader, ProblemList } from '../config';
import { PolicyReader } from './fields';

/** How a StringMatch compares; `present` (an empty match `{}`) only asks that the value exists. */
export type StringMatchKind = 'exact' | 'prefix' | 'regex' | 'present';

/** A parsed StringMatch, as written. */
export interface StringMatch {
  readonly kind: StringMatchKind;
  readonly value: string;
}

/** A StringMatch ready for the request path: regexes compiled, case folded when asked. */
export interface StringMatcher {
  readonly kind: StringMatchKind;
  /** The value to compare; lower-cased when the match ignores case. */
  readonly value: string;
  /** The anchored regex (kind `regex` only). */
  readonly re: RegExp | undefined;
}

const KINDS = ['exact', 'prefix', 'regex'] as const;

/**
 * Reads a StringMatch at `path`. `allowPresent` lets `{}` mean "the value exists" (headers, query parameters).
 * Records a problem and returns undefined when it is wrong.
 */
export function readStringMatch(value: unknown, path: readonly (string | number)[], problems: ProblemList, allowPresent: boolean): StringMatch | undefined {
  const r = new PolicyReader(value, path, problems);
  const set = KINDS.filter((k) => r.has(k));
  let result: StringMatch | undefined;
  if (set.length > 1) {
    r.fail(set[1]!, `cannot be set together with ${set[0]}; a match sets exactly one of exact, prefix, regex`);
  } else if (set.length === 0) {
    if (allowPresent && value !== null && typeof value === 'object' && !Array.isArray(value)) result = { kind: 'present', value: '' };
    else if (typeof value === 'object') problems.add(path, 'must set one of exact, prefix or regex');
  } else {
    const kind = set[0]!;
    const text = r.string(kind, '\u0000');
    if (text !== '\u0000') {
      const problem = kind === 'regex' ? regexProblem(text) : undefined;
      if (problem) r.fail(kind, problem);
      else result = { kind, value: text };
    }
  }
  r.done();
  return result;
}

/** Reads a mapping of name -> StringMatch (headers, queryParams); names are checked by `nameProblem`. */
export function readStringMatchMap(
  r: FieldReader,
  key: string,
  nameProblem: (name: string) => string | undefined,
): Record<string, StringMatch> {
  const v = r.raw(key);
  const out: Record<string, StringMatch> = {};
  if (v === undefined || v === null) return out;
  if (typeof v !== 'object' || Array.isArray(v)) {
    r.fail(key, 'must be a mapping of name: {exact | prefix | regex: value}');
    return out;
  }
  for (const [name, item] of Object.entries(v as Record<string, unknown>)) {
    const problem = nameProblem(name);
    if (problem) {
      r.problems.add([...r.path, key, name], problem);
      continue;
    }
    const m = readStringMatch(item ?? {}, [...r.path, key, name], r.problems, true);
    if (m) out[name] = m;
  }
  return out;
}

/** Istio regexes are RE2: no lookaround, no backreferences; a leading `(?i)` makes the match case-insensitive. */
function translateRegex(pattern: string): { source: string; flags: string } {
  return pattern.startsWith('(?i)') ? { source: pattern.slice(4), flags: 'i' } : { source: pattern, flags: '' };
}

/** Why `pattern` is not a regex policy accepts, or undefined. */
export function regexProblem(pattern: string): string | undefined {
  const { source, flags } = translateRegex(pattern);
  if (/\(\?<?[=!]/.test(source)) return `invalid regular expression ${JSON.stringify(pattern)}: lookahead and lookbehind are not RE2 syntax (Istio regexes are RE2)`;
  if (/(?:^|[^\\])(?:\\\\)*\\(?:[1-9]|k<)/.test(source)) return `invalid regular expression ${JSON.stringify(pattern)}: backreferences are not RE2 syntax (Istio regexes are RE2)`;
  try {
    new RegExp(`^(?:${source})$`, flags);
    return undefined;
  } catch (err) {
    const msg = (err as Error).message;
    return `invalid regular expression ${JSON.stringify(pattern)}: ${msg.slice(msg.lastIndexOf(': ') + 2)}`;
  }
}

/** Compiles a checked StringMatch; `ignoreCase` folds exact and prefix values (Istio's ignoreUriCase leaves regexes alone). */
export function compileStringMatch(m: StringMatch, ignoreCase = false): StringMatcher {
  if (m.kind === 'regex') {
    const { source, flags } = translateRegex(m.value);
    // Anchored: Istio (Envoy) regexes must match the whole value.
    return { kind: m.kind, value: m.value, re: new RegExp(`^(?:${source})$`, flags) };
  }
  return { kind: m.kind, value: ignoreCase ? m.value.toLowerCase() : m.value, re: undefined };
}

/** True when `s` (undefined = absent) satisfies the matcher. */
export function matchString(m: StringMatcher, s: string | undefined): boolean {
  if (s === undefined) return false;
  switch (m.kind) {
    case 'exact':
      return s === m.value;
    case 'prefix':
      return s.startsWith(m.value);
    case 'regex':
      return m.re!.test(s);
    case 'present':
      return true;
  }
}
