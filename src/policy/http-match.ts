// The match conditions of VirtualService routes: HTTP (uri, headers, query, method, ...) and L4 (port, labels, SNI).

import type { FieldReader } from '../config';
import { readHostList, readInteger, readStringMap, rejectUnimplemented } from './fields';
import { readStringMatch, readStringMatchMap, type StringMatch } from './string-match';

/** One entry of `http[].match`: every condition set must hold. */
export interface HttpMatchRequest {
  readonly name?: string;
  /** Compared with the path without its query string. */
  readonly uri?: StringMatch;
  readonly method?: StringMatch;
  readonly authority?: StringMatch;
  /** Lower-case header name -> condition. */
  readonly headers: Readonly<Record<string, StringMatch>>;
  /** Lower-case header name -> condition that must NOT hold. */
  readonly withoutHeaders: Readonly<Record<string, StringMatch>>;
  readonly queryParams: Readonly<Record<string, StringMatch>>;
  readonly port?: number;
  readonly sourceLabels: Readonly<Record<string, string>>;
  /** Exact and prefix uri matches ignore case (regexes do not, as in Istio). */
  readonly ignoreUriCase: boolean;
}

/** One entry of `tcp[].match` or `tls[].match`. */
export interface L4MatchAttributes {
  readonly port?: number;
  readonly sourceLabels: Readonly<Record<string, string>>;
  /** TLS routes only: the SNI names this entry matches. */
  readonly sniHosts?: readonly string[];
}

const HTTP_MATCH_UNIMPLEMENTED = ['scheme', 'gateways', 'sourceNamespace', 'statPrefix'];
const L4_MATCH_UNIMPLEMENTED = ['destinationSubnets', 'gateways', 'sourceNamespace', 'sourceSubnet'];

function headerNameProblem(name: string): string | undefined {
  if (name !== name.toLowerCase()) return `header names must be lower-case in Istio; write ${JSON.stringify(name.toLowerCase())}`;
  if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(name)) return `${JSON.stringify(name)} is not a header name (letters, digits and !#$%&'*+-.^_\`|~)`;
  return undefined;
}

function queryNameProblem(name: string): string | undefined {
  return name === '' ? 'a query parameter name cannot be empty' : undefined;
}

function readOptionalMatch(r: FieldReader, key: string): StringMatch | undefined {
  return r.has(key) ? readStringMatch(r.raw(key), [...r.path, key], r.problems, false) : undefined;
}

/** Reads one `http[].match[]` entry. */
export function readHttpMatch(r: FieldReader): HttpMatchRequest {
  const name = r.has('name') ? r.string('name', '') : undefined;
  const uri = readOptionalMatch(r, 'uri');
  const method = readOptionalMatch(r, 'method');
  const authority = readOptionalMatch(r, 'authority');
  const headers = readStringMatchMap(r, 'headers', headerNameProblem);
  const withoutHeaders = readStringMatchMap(r, 'withoutHeaders', headerNameProblem);
  const queryParams = readStringMatchMap(r, 'queryParams', queryNameProblem);
  const port = readInteger(r, 'port', 1, 65535);
  const sourceLabels = readStringMap(r, 'sourceLabels');
  const ignoreUriCase = r.boolean('ignoreUriCase', false);
  rejectUnimplemented(r, HTTP_MATCH_UNIMPLEMENTED);
  r.done();
  return {
    ...(name ? { name } : {}),
    ...(uri ? { uri } : {}),
    ...(method ? { method } : {}),
    ...(authority ? { authority } : {}),
    headers,
    withoutHeaders,
    queryParams,
    ...(port !== undefined ? { port } : {}),
    sourceLabels,
    ignoreUriCase,
  };
}

/** Reads one `tcp[].match[]` (or, with `tls`, `tls[].match[]`, where sniHosts is required) entry. */
export function readL4Match(r: FieldReader, tls: boolean): L4MatchAttributes {
  const port = readInteger(r, 'port', 1, 65535);
  const sourceLabels = readStringMap(r, 'sourceLabels');
  const sniHosts = tls ? readHostList(r, 'sniHosts', { required: true }) : undefined;
  rejectUnimplemented(r, L4_MATCH_UNIMPLEMENTED);
  r.done();
  return { ...(port !== undefined ? { port } : {}), sourceLabels, ...(sniHosts ? { sniHosts } : {}) };
}
