// `npm run build:deb`: build/mesh-agent_<version>_amd64.deb from the single-file binary, the systemd units and packaging/deb/.

import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { dirname, join, relative } from 'node:path';
import { buildBinary, ROOT, type BuiltBinary } from './build-binary';
import { nodeRuntime, run, sqliteAddonFor } from './node-runtime';

const DEB = join(ROOT, 'packaging', 'deb');
/** The sample agent config, installed as a conffile: dpkg keeps an operator's edits across upgrades. */
const CONFFILES = ['/etc/mesh-agent/agent.yaml'];

export interface BuiltDeb {
  readonly path: string;
  readonly version: string;
  readonly bytes: number;
}

/** Every file under `dir`, as paths relative to it. */
function walk(dir: string, base = dir): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name), base) : [relative(base, join(dir, e.name))]));
}

function put(root: string, path: string, content: string | Buffer, mode: number): void {
  const file = join(root, path);
  mkdirSync(dirname(file), { recursive: true, mode: 0o755 });
  writeFileSync(file, content);
  chmodSync(file, mode);
}

/** The Depends that dpkg-shlibdeps computes for the binary and the addon it writes out at run time (glibc, libstdc++). */
function sharedLibraryDepends(files: string[], work: string): string {
  mkdirSync(join(work, 'debian'), { recursive: true });
  writeFileSync(join(work, 'debian', 'control'), 'Source: mesh-agent\n\nPackage: mesh-agent\nArchitecture: amd64\n');
  const out = run('dpkg-shlibdeps', ['-O', ...files.map((f) => `-e${f}`)], { cwd: work });
  const m = /^shlibs:Depends=(.+)$/m.exec(out);
  if (!m) throw new Error(`dpkg-shlibdeps printed no shlibs:Depends: ${out}`);
  return m[1]!;
}

/** /usr/share/doc/mesh-agent/copyright: mesh-agent's license, then the notices of everything the binary embeds. */
function copyright(nodeDir: string, packageDirs: readonly string[]): string {
  const parts = [
    'mesh-agent\n\nLicense: Apache-2.0\n On Debian systems the full text of the Apache License 2.0 is in /usr/share/common-licenses/Apache-2.0.\n',
    '/usr/bin/mesh-agent is a Node.js Single Executable Application: it embeds the Node.js runtime, the\nJavaScript packages listed below, and better-sqlite3\'s native addon with SQLite (public domain).\n',
  ];
  for (const dir of packageDirs) {
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name: string; version: string; license?: string };
    const file = readdirSync(dir).find((f) => /^licen[cs]e(\.md|\.txt)?$/i.test(f));
    let text = file ? readFileSync(join(dir, file), 'utf8').trim() : '(no license file in the package)';
    // A package offered under "X OR GPL-2.0" (node-forge) is used under X; the GPL is in common-licenses, not quoted.
    const gpl = text.indexOf('GNU GENERAL PUBLIC LICENSE');
    if (gpl > 0 && /\bOR GPL-2\.0\b/.test(pkg.license ?? '')) text = `${text.slice(0, gpl).trim()}\n\n(Used here under the first option; the GPL-2 is in /usr/share/common-licenses/GPL-2.)`;
    parts.push(`---- ${pkg.name} ${pkg.version}, license ${pkg.license ?? 'see below'}\n\n${text}\n`);
  }
  parts.push(`---- Node.js ${(JSON.parse(readFileSync(join(nodeDir, 'package.json'), 'utf8')) as { version: string }).version}\n\n${readFileSync(join(nodeDir, 'LICENSE'), 'utf8').trim()}\n`);
  return parts.join('\n');
}

/**
 * Stages the package tree (binary in /usr/bin, units in /lib/systemd/system, sample config, docs, maintainer
 * scripts) and runs `dpkg-deb --build`. Builds the binary first unless `binary` is given. xz (the default) makes the
 * smallest package; gzip takes a tenth of the CPU time for a package 45 % larger; none is for throwaway test packages.
 */
export function buildDeb(opts: { binary?: BuiltBinary; version?: string; out?: string; compression?: 'xz' | 'gzip' | 'none' } = {}): BuiltDeb {
  const out = opts.out ?? join(ROOT, 'build');
  const binary = opts.binary ?? buildBinary(out);
  const version = opts.version ?? binary.version;
  const nodeDir = nodeRuntime();
  const stage = join(out, 'deb-root');
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(stage, { recursive: true });
  const epoch = Number(run('git', ['log', '-1', '--format=%ct'], { cwd: ROOT }).trim()) || Math.floor(Date.now() / 1000);

  mkdirSync(join(stage, 'usr', 'bin'), { recursive: true });
  copyFileSync(binary.path, join(stage, 'usr', 'bin', 'mesh-agent'));
  chmodSync(join(stage, 'usr', 'bin', 'mesh-agent'), 0o755);
  for (const unit of readdirSync(join(ROOT, 'systemd')).filter((f) => f.endsWith('.service'))) {
    put(stage, `lib/systemd/system/${unit}`, readFileSync(join(ROOT, 'systemd', unit)), 0o644);
  }
  put(stage, 'etc/mesh-agent/agent.yaml', readFileSync(join(DEB, 'agent.yaml')), 0o644);
  put(stage, 'usr/share/lintian/overrides/mesh-agent', readFileSync(join(DEB, 'lintian-overrides')), 0o644);
  put(stage, 'usr/share/doc/mesh-agent/copyright', copyright(nodeDir, binary.packages), 0o644);
  const date = new Date(epoch * 1000).toUTCString().replace('GMT', '+0000');
  const maintainer = /^Maintainer: (.+)$/m.exec(readFileSync(join(DEB, 'control'), 'utf8'))![1]!;
  const changelog = `mesh-agent (${version}) unstable; urgency=medium\n\n  * Release ${version}; see the project's git history.\n\n -- ${maintainer}  ${date}\n`;
  put(stage, 'usr/share/doc/mesh-agent/changelog.gz', gzipSync(changelog, { level: 9 }), 0o644);

  const files = walk(stage);
  const dirs = new Set(files.flatMap((f) => f.split('/').slice(0, -1).map((_, i, a) => a.slice(0, i + 1).join('/'))));
  // Installed-Size as dpkg-gencontrol counts it: KiB per file rounded up, plus one per directory.
  const installedSize = files.reduce((kb, f) => kb + Math.ceil(statSync(join(stage, f)).size / 1024), 0) + dirs.size;
  const depends = sharedLibraryDepends([join(stage, 'usr', 'bin', 'mesh-agent'), sqliteAddonFor(nodeDir, ROOT)], join(out, 'shlibdeps'));
  const control = readFileSync(join(DEB, 'control'), 'utf8').replace('{{version}}', version).replace('{{installedSize}}', String(installedSize)).replace('{{shlibsDepends}}', depends);
  put(stage, 'DEBIAN/control', control, 0o644);
  put(stage, 'DEBIAN/conffiles', `${CONFFILES.join('\n')}\n`, 0o644);
  const md5 = files.filter((f) => !CONFFILES.includes(`/${f}`)).map((f) => `${createHash('md5').update(readFileSync(join(stage, f))).digest('hex')}  ${f}`);
  put(stage, 'DEBIAN/md5sums', `${md5.join('\n')}\n`, 0o644);
  for (const script of ['postinst', 'prerm', 'postrm']) put(stage, `DEBIAN/${script}`, readFileSync(join(DEB, script)), 0o755);
  // Directories as dpkg and lintian expect them whatever the umask (dpkg-deb refuses a DEBIAN/ that is not 0755).
  for (const dir of ['', 'DEBIAN', ...dirs]) chmodSync(join(stage, dir), 0o755);

  const path = join(out, `mesh-agent_${version}_amd64.deb`);
  if (existsSync(path)) rmSync(path);
  run('dpkg-deb', ['--root-owner-group', `-Z${opts.compression ?? 'xz'}`, '--build', stage, path], { env: { ...process.env, SOURCE_DATE_EPOCH: String(epoch) } });
  return { path, version, bytes: statSync(path).size };
}

if (require.main === module) {
  const started = Date.now();
  const d = buildDeb();
  process.stdout.write(`${d.path}: ${(d.bytes / 1048576).toFixed(1)} MiB, built in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}
