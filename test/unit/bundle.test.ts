// The CommonJS bundler behind the single-file binary: resolution as Node does it, cycles, JSON, built-ins, and what it cannot bundle.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { bundle } from '../../packaging/bundle';
import { tempDir } from '../helpers/processes';

describe('bundle', () => {
  const tmp = tempDir('mesh-bundle-test-');
  after(() => tmp.cleanup());
  const write = (files: Record<string, string>): string => {
    const root = join(tmp.dir, `t${Math.random().toString(36).slice(2)}`);
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(dirname(join(root, path)), { recursive: true });
      writeFileSync(join(root, path), text);
    }
    return root;
  };
  /** Runs a bundle the way the binary does: as the main script, where `require` is the host's. */
  const runBundle = (source: string, args: string[] = []): { status: number | null; stdout: string; stderr: string } => {
    const file = join(tmp.dir, `bundle-${Math.random().toString(36).slice(2)}.js`);
    writeFileSync(file, source);
    return spawnSync(process.execPath, [file, ...args], { encoding: 'utf8' });
  };

  it('bundles modules and packages (exports maps resolved as Node resolves them), JSON, cycles and built-ins into one runnable script', () => {
    const root = write({
      'src/main.js': `const a = require('./a'); const pkg = require('pkg'); const data = require('./data.json'); const os = require('node:os');
        exports.main = (argv) => console.log(JSON.stringify({ a: a.name, b: a.b(), pkg: pkg.kind, data, os: typeof os.cpus, argv: argv.slice(2), file: __filename }));`,
      'src/a.js': `exports.name = 'a'; const b = require('./b'); exports.b = () => b.seenA;`,
      'src/b.js': `exports.seenA = require('./a').name; // a cycle: b sees a's exports as they are when b runs`,
      'src/data.json': '{ "n": 1 }',
      'node_modules/pkg/package.json': '{ "name": "pkg", "exports": { "require": "./cjs.js", "import": "./esm.mjs" } }',
      'node_modules/pkg/cjs.js': `module.exports = { kind: 'cjs' };`,
      'node_modules/pkg/esm.mjs': `export const kind = 'esm';`,
    });
    const b = bundle({ root, entry: join(root, 'src', 'main.js') });
    assert.deepEqual([...b.modules].sort(), ['node_modules/pkg/cjs.js', 'src/a.js', 'src/b.js', 'src/data.json', 'src/main.js']);
    assert.deepEqual(b.unresolved, []);
    const r = runBundle(b.source, ['x']);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { a: 'a', b: 'a', pkg: 'cjs', data: { n: 1 }, os: 'function', argv: ['x'], file: '/mesh-agent/src/main.js' });
  });

  it('uses a replacement source for a module when given one', () => {
    const root = write({ 'main.js': `exports.main = () => console.log(require('./info').commit);`, 'info.js': `exports.commit = null;` });
    const r = runBundle(bundle({ root, entry: join(root, 'main.js'), replace: { 'info.js': `exports.commit = 'abc123';` } }).source);
    assert.equal(r.stdout.trim(), 'abc123');
  });

  it('lists an optional require that does not resolve, which throws MODULE_NOT_FOUND only when reached', () => {
    const root = write({
      'main.js': `let fast = 'absent'; try { fast = require('optional-native'); } catch (e) { fast = e.code + ': ' + e.message; }
        exports.main = () => console.log(fast);`,
    });
    const b = bundle({ root, entry: join(root, 'main.js') });
    assert.deepEqual(b.unresolved, ['main.js: optional-native']);
    const r = runBundle(b.source);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^MODULE_NOT_FOUND: Cannot find module 'optional-native' \(required by main\.js; it is not in the mesh-agent bundle\)/);
  });

  it('reports computed requires, and refuses native addons', () => {
    const dyn = write({ 'main.js': `const name = 'x'; exports.main = () => require(name);` });
    assert.deepEqual(bundle({ root: dyn, entry: join(dyn, 'main.js') }).dynamic, ['main.js: require(name)']);
    const native = write({ 'main.js': `require('./addon.node'); exports.main = () => {};`, 'addon.node': '' });
    assert.throws(() => bundle({ root: native, entry: join(native, 'main.js') }), /main\.js requires the native addon \.\/addon\.node: native code cannot be bundled/);
  });
});
