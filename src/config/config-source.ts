// Reads a YAML or JSON config file into plain data, remembering where each field sits so errors can name its line.

import { readFileSync } from 'node:fs';
import { isMap, isNode, isScalar, LineCounter, parseDocument } from 'yaml';
import { MeshError } from '../errors';

/** Parsed config data plus a way to find the line of any field path. */
export interface ConfigSource {
  /** File name, or a label such as "flags" when there is no file. */
  readonly name: string;
  readonly data: unknown;
  /** 1-based line of the value at `path`, when it came from the file. */
  lineOf(path: readonly (string | number)[]): number | undefined;
}

/** A source with no file behind it. */
export function emptySource(name = 'defaults'): ConfigSource {
  return { name, data: {}, lineOf: () => undefined };
}

/** Parses YAML (JSON is YAML too) text. @throws MeshError MESH_ERR_CONFIG naming the line of a syntax error. */
export function parseConfigText(text: string, name: string): ConfigSource {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const msgs = doc.errors.map((e) => `${name}:${lineCounter.linePos(e.pos[0]).line}: ${e.message.split('\n')[0]}`);
    throw new MeshError('MESH_ERR_CONFIG', `cannot parse ${name}:\n  ${msgs.join('\n  ')}`);
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (err) {
    // An alias bomb, or an alias to nothing (an unquoted value that starts with "*").
    throw new MeshError('MESH_ERR_CONFIG', `cannot read ${name}: ${/Excessive alias count/.test((err as Error).message) ? 'aliases expand more than 100 times (an alias bomb?)' : (err as Error).message}`, { cause: err });
  }
  return {
    name,
    data,
    lineOf(path) {
      // A field's line is its key's line (a block value starts on the next one); list items have no key.
      const last = path[path.length - 1];
      if (typeof last === 'string') {
        const parent = path.length === 1 ? doc.contents : doc.getIn(path.slice(0, -1) as (string | number)[], true);
        if (isMap(parent)) {
          const pair = parent.items.find((p) => isScalar(p.key) && String(p.key.value) === last);
          if (pair && isNode(pair.key) && pair.key.range) return lineCounter.linePos(pair.key.range[0]).line;
        }
      }
      const node = doc.getIn(path as (string | number)[], true);
      if (!isNode(node) || !node.range) return undefined;
      return lineCounter.linePos(node.range[0]).line;
    },
  };
}

/** Reads and parses a config file. @throws MeshError MESH_ERR_CONFIG when unreadable or not YAML/JSON. */
export function readConfigFile(file: string): ConfigSource {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new MeshError('MESH_ERR_CONFIG', `cannot read config file ${file}: ${(err as Error).message}`, { cause: err });
  }
  return parseConfigText(text, file);
}
