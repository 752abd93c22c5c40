// A small CommonJS bundler: the compiled program and its pure-JS packages in one script, as a module map with a require shim.

import { readFileSync } from 'node:fs';
import { createRequire, isBuiltin } from 'node:module';
import { extname, relative, sep } from 'node:path';

/** The bundled script and what went into it. */
export interface Bundle {
  /** The script: run it as CommonJS where `require` loads Node's built-in modules. */
  readonly source: string;
  /** Module ids (paths relative to the root), in the order they were found. */
  readonly modules: readonly string[];
  /** Literal requires that did not resolve at bundle time (`<module id>: <specifier>`); they throw MODULE_NOT_FOUND if reached. */
  readonly unresolved: readonly string[];
  /** Modules that call `require` with a computed argument (`<module id>: <expression>`), which only built-ins can satisfy. */
  readonly dynamic: readonly string[];
}

export interface BundleOptions {
  /** The directory module ids are relative to (the package root). */
  readonly root: string;
  /** The entry module (absolute path); the bundle runs `require(entry).main(process.argv)`. */
  readonly entry: string;
  /** Module sources to use instead of a file's contents, by module id (build-time values such as the git commit). */
  readonly replace?: Readonly<Record<string, string>>;
}

// `require('x')` with a string literal; `require(` followed by anything else is a computed require.
const LITERAL_REQUIRE = /(?<![\w$.])require\(\s*(['"])([^'"\n]+)\1\s*\)/g;
const ANY_REQUIRE = /(?<![\w$.])require\(\s*([^)'"\s][^)\n]{0,60})\)/g;

/**
 * Bundles `entry` and every module it requires (resolved the way Node resolves them for `require`).
 * Comments are not parsed out, so a `require('x')` inside a comment is resolved too; if it does not resolve
 * it is only listed in `unresolved`.
 */
export function bundle(opts: BundleOptions): Bundle {
  const ids = new Map<string, string>(); // absolute path -> id
  const maps = new Map<string, Record<string, string>>(); // id -> specifier -> id
  const sources = new Map<string, string>();
  const unresolved: string[] = [];
  const dynamic: string[] = [];
  const idOf = (file: string): string => relative(opts.root, file).split(sep).join('/');
  const queue = [opts.entry];
  ids.set(opts.entry, idOf(opts.entry));

  while (queue.length > 0) {
    const file = queue.shift()!;
    const id = ids.get(file)!;
    const text = opts.replace?.[id] ?? readFileSync(file, 'utf8');
    const code = extname(file) === '.json' ? `module.exports = ${text.trim()};` : text.replace(/^\/\/# sourceMappingURL=.*$/m, '');
    sources.set(id, code);
    const map: Record<string, string> = {};
    const req = createRequire(file);
    for (const m of code.matchAll(LITERAL_REQUIRE)) {
      const spec = m[2]!;
      if (isBuiltin(spec) || spec in map) continue;
      let target: string;
      try {
        target = req.resolve(spec);
      } catch {
        unresolved.push(`${id}: ${spec}`);
        continue;
      }
      if (extname(target) === '.node') throw new Error(`${id} requires the native addon ${spec}: native code cannot be bundled; load it through an asset instead`);
      if (!ids.has(target)) {
        ids.set(target, idOf(target));
        queue.push(target);
      }
      map[spec] = ids.get(target)!;
    }
    for (const m of code.matchAll(ANY_REQUIRE)) dynamic.push(`${id}: require(${m[1]!.trim()})`);
    maps.set(id, map);
  }

  const modules = [...sources.keys()];
  const table = modules.map((id) => `${JSON.stringify(id)}: [${JSON.stringify(maps.get(id))}, function (exports, require, module, __filename, __dirname) {\n${sources.get(id)}\n}]`).join(',\n');
  const source = `${PRELUDE}\nconst __modules = {\n${table}\n};\n__load(${JSON.stringify(ids.get(opts.entry))}).main(process.argv);\n`;
  return { source, modules, unresolved, dynamic };
}

// The runtime half: loads a module on first require, caches it (cycles see the partial exports, as in Node),
// and hands built-in specifiers to the host's require. __filename is the module's path in the source tree.
const PRELUDE = `// mesh-agent, bundled by packaging/bundle.ts: every module below is a file of the source tree, by its path.
const __builtin = require;
const __cache = Object.create(null);
function __load(id) {
  const cached = __cache[id];
  if (cached) return cached.exports;
  const [map, fn] = __modules[id];
  const module = { exports: {} };
  __cache[id] = module;
  const dirname = id.includes('/') ? id.slice(0, id.lastIndexOf('/')) : '.';
  const req = (spec) => {
    if (Object.prototype.hasOwnProperty.call(map, spec)) return __load(map[spec]);
    if (__builtin('node:module').isBuiltin(spec)) return __builtin(spec);
    const err = new Error("Cannot find module '" + spec + "' (required by " + id + "; it is not in the mesh-agent bundle)");
    err.code = 'MODULE_NOT_FOUND';
    throw err;
  };
  fn.call(module.exports, module.exports, req, module, '/mesh-agent/' + id, '/mesh-agent/' + dirname);
  return module.exports;
}`;
