// Unit tests for src/config and the agent/server config loaders: durations, addresses, every problem reported, overlays, freezing, defaults.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, networkInterfaces, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { AGENT_DEFAULTS, loadAgentConfig } from '../../src/agent/agent-config';
import { DEFAULT_PROXY_LIMITS } from '../../src/proxy';
import { formatDuration, parseDuration, parseHostPort, type ConfigProblem } from '../../src/config';
import { isMeshError, type MeshError } from '../../src/errors';
import { loadServerConfig, SERVER_DEFAULTS } from '../../src/server/server-config';

const tmp = mkdtempSync(join(tmpdir(), 'mesh-config-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

let fileNo = 0;
function configFile(text: string): string {
  const file = join(tmp, `c${fileNo++}.yaml`);
  writeFileSync(file, text);
  return file;
}

/** Runs `fn`, asserts it throws MESH_ERR_CONFIG, and returns the error with its problem list. */
function configError(fn: () => unknown): MeshError & { problems: ConfigProblem[] } {
  try {
    fn();
  } catch (err) {
    assert.ok(isMeshError(err, 'MESH_ERR_CONFIG'), `expected MESH_ERR_CONFIG, got ${String(err)}`);
    return err as MeshError & { problems: ConfigProblem[] };
  }
  assert.fail('expected a MESH_ERR_CONFIG error, nothing was thrown');
}

/** Every object reachable from `value` is frozen. */
function assertDeepFrozen(value: unknown, path = 'config'): void {
  if (value === null || typeof value !== 'object') return;
  assert.ok(Object.isFrozen(value), `${path} is not frozen`);
  for (const [k, v] of Object.entries(value)) assertDeepFrozen(v, `${path}.${k}`);
}

describe('parseDuration', () => {
  for (const [text, ms] of [
    ['500ms', 500],
    ['10s', 10_000],
    ['1h30m', 5_400_000],
    ['24h', 86_400_000],
    ['720h', 2_592_000_000],
    ['1m30s', 90_000],
    ['1.5s', 1500],
    ['2d', 172_800_000],
    ['0', 0],
    [' 5m ', 300_000],
  ] as const) {
    test(`${JSON.stringify(text)} is ${ms} ms`, () => assert.equal(parseDuration(text), ms));
  }

  for (const bad of ['', '10', 'ms', '10 s', '10S', '-1s', '1h 30m', 'abc', '5x', '1e3s', 's10', '10s!']) {
    test(`${JSON.stringify(bad)} is not a duration`, () => assert.equal(parseDuration(bad), undefined));
  }

  test('formatDuration prints the largest exact unit and round-trips through parseDuration', () => {
    for (const [ms, text] of [[86_400_000, '1d'], [3_600_000, '1h'], [10_000, '10s'], [1500, '1500ms'], [5_400_000, '90m']] as const) {
      assert.equal(formatDuration(ms), text);
      assert.equal(parseDuration(text), ms);
    }
  });
});

describe('parseHostPort', () => {
  test('accepts host:port, [v6]:port and :port (default host)', () => {
    assert.deepEqual(parseHostPort('127.0.0.1:15010'), { host: '127.0.0.1', port: 15010 });
    assert.deepEqual(parseHostPort('mesh-server:443'), { host: 'mesh-server', port: 443 });
    assert.deepEqual(parseHostPort('[::1]:8080'), { host: '::1', port: 8080 });
    assert.deepEqual(parseHostPort(':9000'), { host: '0.0.0.0', port: 9000 });
    assert.deepEqual(parseHostPort(':9000', '127.0.0.1'), { host: '127.0.0.1', port: 9000 });
    assert.deepEqual(parseHostPort('0.0.0.0:0'), { host: '0.0.0.0', port: 0 });
    assert.deepEqual(parseHostPort('h:65535'), { host: 'h', port: 65535 });
  });

  for (const bad of ['', 'host', 'host:', 'host:65536', 'host:99999', 'host:-1', 'a:b:80', '::1:80', 'host:80x', 'ho st:80', '[::1]80']) {
    test(`refuses ${JSON.stringify(bad)}`, () => assert.equal(parseHostPort(bad), undefined));
  }
});

describe('loadAgentConfig', () => {
  test('a file with two mistakes reports both in one MESH_ERR_CONFIG, with field paths and lines', () => {
    const file = configFile(
      [
        'nodeName: node-1', // 1
        'services:', // 2
        '  - name: web', // 3
        '    port: 70000', // 4
        '    colour: blue', // 5
      ].join('\n'),
    );
    const err = configError(() => loadAgentConfig({ file, env: {} }));
    assert.equal(err.problems.length, 2, err.message);
    const byPath = new Map(err.problems.map((p) => [p.path, p]));
    assert.equal(byPath.get('services[0].port')?.line, 4);
    assert.match(byPath.get('services[0].port')!.message, /got 70000, expected an integer from 1 to 65535/);
    assert.equal(byPath.get('services[0].colour')?.line, 5);
    assert.match(byPath.get('services[0].colour')!.message, /unknown field/);
    // The message a user sees carries both, each with path, file and line.
    assert.match(err.message, /2 problems/);
    assert.ok(err.message.includes(`services[0].port (${file}:4)`), err.message);
    assert.ok(err.message.includes(`services[0].colour (${file}:5)`), err.message);
    assert.equal(err.retryable, false);
  });

  test('limits: the documented defaults, values set in the file, and every bad one reported', () => {
    assert.deepEqual(loadAgentConfig({ file: configFile('nodeName: n\n'), env: {} }).limits, DEFAULT_PROXY_LIMITS);
    assert.deepEqual(DEFAULT_PROXY_LIMITS, { maxHeadBytes: 65536, maxHeaders: 100, maxRetryBodyBytes: 65536, maxConnections: 10_000, h2MaxConcurrentStreams: 1000, h2IdleTimeoutMs: 300_000 });
    const set = loadAgentConfig({ file: configFile('limits: { maxHeadBytes: 8192, maxHeaders: 20, maxRetryBodyBytes: 0, maxConnections: 5, h2MaxConcurrentStreams: 10, h2IdleTimeout: 30s }\n'), env: {} }).limits;
    assert.deepEqual(set, { maxHeadBytes: 8192, maxHeaders: 20, maxRetryBodyBytes: 0, maxConnections: 5, h2MaxConcurrentStreams: 10, h2IdleTimeoutMs: 30_000 });
    const err = configError(() => loadAgentConfig({ file: configFile('limits:\n  maxHeadBytes: 10\n  maxHeaders: lots\n  maxConnections: 0\n  h2IdleTimeout: 10ms\n  maxBody: 1\n'), env: {} }));
    assert.deepEqual(err.problems.map((p) => p.path).sort(), ['limits.h2IdleTimeout', 'limits.maxBody', 'limits.maxConnections', 'limits.maxHeadBytes', 'limits.maxHeaders']);
    assert.match(err.problems.find((p) => p.path === 'limits.maxHeadBytes')!.message, /got 10, expected an integer from 1024 to 1048576/);
  });

  test('unknown fields are errors at every level, and the known ones are listed', () => {
    const file = configFile('nodename: x\ninbound:\n  listen: ":15443"\n  tls: true\n');
    const err = configError(() => loadAgentConfig({ file, env: {} }));
    const lines = Object.fromEntries(err.problems.map((p) => [p.path, p.line]));
    assert.deepEqual(lines, { 'inbound.tls': 4, nodename: 1 });
    assert.match(err.problems.find((p) => p.path === 'nodename')!.message, /unknown field \(known here: .*nodeName/);
  });

  // BUG (src/config/config-source.ts:35, lineOf): an unknown field whose value is a block mapping is
  // reported at the line of its first child (3), not at the key (2).
  test('an unknown field with a mapping value is reported at its key\'s line', () => {
    const file = configFile('nodeName: n\ntls:\n  enabled: true\n');
    const err = configError(() => loadAgentConfig({ file, env: {} }));
    assert.equal(err.problems.find((p) => p.path === 'tls')?.line, 2);
  });

  test('a YAML syntax error is MESH_ERR_CONFIG naming the line', () => {
    const file = configFile('nodeName: a\nservices: [\n');
    const err = configError(() => loadAgentConfig({ file, env: {} }));
    assert.ok(err.message.includes(`${file}:`), err.message);
  });

  test('a missing file is MESH_ERR_CONFIG naming the file', () => {
    const file = join(tmp, 'absent.yaml');
    const err = configError(() => loadAgentConfig({ file }));
    assert.ok(err.message.includes(file));
  });

  test('env (MESH_*) overrides the file, and flags override env', () => {
    const file = configFile('inbound:\n  listen: "0.0.0.0:1001"\nadmin:\n  listen: "127.0.0.1:2001"\nnodeName: from-file\n');
    const fileOnly = loadAgentConfig({ file, env: {} });
    assert.equal(fileOnly.inbound.port, 1001);
    assert.equal(fileOnly.nodeName, 'from-file');

    const env = { MESH_INBOUND_LISTEN: '0.0.0.0:1002', MESH_ADMIN_LISTEN: '127.0.0.1:2002', MESH_NODE_NAME: 'from-env' };
    const withEnv = loadAgentConfig({ file, env });
    assert.equal(withEnv.inbound.port, 1002);
    assert.equal(withEnv.admin.port, 2002);
    assert.equal(withEnv.nodeName, 'from-env');

    const withFlags = loadAgentConfig({ file, env, flags: { inboundListen: '0.0.0.0:1003', nodeName: 'from-flag' } });
    assert.equal(withFlags.inbound.port, 1003);
    assert.equal(withFlags.nodeName, 'from-flag');
    assert.equal(withFlags.admin.port, 2002, 'env still applies where no flag is given');

    // An empty env value does not override.
    assert.equal(loadAgentConfig({ file, env: { MESH_NODE_NAME: '' } }).nodeName, 'from-file');
  });

  test('a bad flag or env value names where it came from instead of a file line', () => {
    const file = configFile('inbound:\n  listen: "0.0.0.0:1001"\n');
    const err = configError(() => loadAgentConfig({ file, env: { MESH_ADMIN_LISTEN: 'nope' }, flags: { inboundListen: 'not-an-address' } }));
    assert.equal(err.problems.length, 2, err.message);
    assert.match(err.message, /inbound\.listen \(from --inbound-listen\): got "not-an-address", expected an address "host:port"/);
    assert.match(err.message, /admin\.listen \(from env MESH_ADMIN_LISTEN\): got "nope"/);
    // The file's line 2 is not blamed for the flag's value.
    assert.equal(err.problems.find((p) => p.path.startsWith('inbound.listen'))?.line, undefined);
  });

  test('the returned config is deeply frozen', () => {
    const file = configFile(
      'services:\n  - name: web\n    port: 8080\n    upstreams:\n      - service: api\n        port: 9001\n',
    );
    const cfg = loadAgentConfig({ file, env: {} });
    assertDeepFrozen(cfg);
    assert.ok(Object.isFrozen(cfg.services[0]!.upstreams[0]!.listen));
    assert.throws(() => {
      (cfg.inbound as { port: number }).port = 1;
    }, TypeError);
  });

  test('an empty config yields the documented defaults (AGENT_DEFAULTS)', () => {
    const cfg = loadAgentConfig({ env: {} });
    assert.equal(cfg.stateDir, resolve(AGENT_DEFAULTS.stateDir));
    assert.deepEqual(cfg.inbound, AGENT_DEFAULTS.inbound);
    assert.deepEqual(cfg.admin, AGENT_DEFAULTS.admin);
    assert.equal(cfg.address, '127.0.0.1', 'inbound on 0.0.0.0 advertises 127.0.0.1');
    assert.equal(cfg.nodeName, hostname());
    assert.equal(cfg.server, undefined);
    assert.equal(cfg.endpointsFile, undefined);
    assert.deepEqual(cfg.services, []);
    // The same as an empty file.
    assert.deepEqual(loadAgentConfig({ file: configFile(''), env: {} }).inbound, AGENT_DEFAULTS.inbound);
  });

  test('AGENT_DEFAULTS match the @default values documented on AgentConfig', () => {
    const docs = documentedDefaults(join(__dirname, '../../../src/agent/agent-config.ts'));
    assert.equal(docs.get('stateDir'), `"${AGENT_DEFAULTS.stateDir}"`);
    assert.equal(docs.get('inbound'), `${AGENT_DEFAULTS.inbound.host}:${AGENT_DEFAULTS.inbound.port}`);
    assert.equal(docs.get('admin'), `${AGENT_DEFAULTS.admin.host}:${AGENT_DEFAULTS.admin.port}`);
  });

  test('service and upstream defaults: namespace "default", protocol tcp, app and upstream on 127.0.0.1', () => {
    const file = configFile('services:\n  - name: web\n    port: 8080\n    upstreams:\n      - service: api\n        port: 9001\n');
    const [web] = loadAgentConfig({ file, env: {} }).services;
    assert.deepEqual(web, {
      name: 'web',
      namespace: AGENT_DEFAULTS.namespace,
      target: { host: '127.0.0.1', port: 8080 },
      protocol: AGENT_DEFAULTS.protocol,
      labels: { app: 'web' },
      upstreams: [{ service: 'api', namespace: 'default', listen: { host: '127.0.0.1', port: 9001 }, protocol: 'tcp', servicePort: 9001 }],
      tags: [],
      meta: {},
      check: undefined,
    });
  });

  test('service labels, for security policy selectors; bad names and values are refused', () => {
    const ok = configFile('services:\n  - name: web\n    port: 8080\n    labels: {version: v2, team.example.com/owner: payments, canary: true}\n');
    assert.deepEqual(loadAgentConfig({ file: ok, env: {} }).services[0]!.labels, { app: 'web', version: 'v2', 'team.example.com/owner': 'payments', canary: 'true' });
    const bad = configFile('services:\n  - name: web\n    port: 8080\n    labels: {"bad key": x, version: "v 2", list: [a]}\n');
    assert.throws(() => loadAgentConfig({ file: bad, env: {} }), (e: Error) => {
      assert.match(e.message, /services\[0\]\.labels\.bad key \(.*:4\): "bad key" is not a label name/);
      assert.match(e.message, /services\[0\]\.labels\.version \(.*\): got "v 2", expected a label value/);
      assert.match(e.message, /services\[0\]\.labels\.list \(.*\): got \["a"\], expected a label value/);
      return true;
    });
    assert.throws(() => loadAgentConfig({ file: configFile('services:\n  - name: web\n    port: 8080\n    labels: [a]\n'), env: {} }), /services\[0\]\.labels \(.*\): must be a mapping of label: value/);
  });

  test('relative paths in the file are relative to the file', () => {
    const file = configFile('stateDir: state\nendpointsFile: eps.yaml\n');
    const cfg = loadAgentConfig({ file, env: {} });
    assert.equal(cfg.stateDir, join(dirname(file), 'state'));
    assert.equal(cfg.endpointsFile, join(dirname(file), 'eps.yaml'));
  });

  test('a relative path given as a flag or env var is relative to the working directory, not the file', () => {
    const file = configFile('stateDir: state\nendpointsFile: eps.yaml\n');
    assert.equal(loadAgentConfig({ file, env: {}, flags: { stateDir: 'from-flag' } }).stateDir, resolve('from-flag'));
    const cfg = loadAgentConfig({ file, env: { MESH_STATE_DIR: 'from-env', MESH_ENDPOINTS_FILE: 'env-eps.yaml' } });
    assert.equal(cfg.stateDir, resolve('from-env'));
    assert.equal(cfg.endpointsFile, resolve('env-eps.yaml'));
  });

  // BUG (src/agent/agent-config.ts:77,85): `r.has(key) ? r.string(key) : undefined` never marks a null-valued
  // key as read, so `server: ~` (or `endpointsFile:` left empty) is reported as "unknown field server".
  test('a known field set to null is treated as absent, not as an unknown field', () => {
    const cfg = loadAgentConfig({ file: configFile('server: ~\nendpointsFile:\n'), env: {} });
    assert.equal(cfg.server, undefined);
    assert.equal(cfg.endpointsFile, undefined);
  });

  test('a service listed twice is reported', () => {
    const file = configFile('services:\n  - name: web\n    port: 8080\n  - name: web\n    port: 8081\n');
    const err = configError(() => loadAgentConfig({ file, env: {} }));
    const p = err.problems.find((x) => x.path === 'services');
    assert.ok(p, err.message);
    assert.match(p.message, /service default\/web is listed twice \(items 0 and 1\)/);
    assert.ok(p.line !== undefined, 'the problem points into the file');
    // The same name in another namespace is a different service.
    loadAgentConfig({ file: configFile('services:\n  - name: web\n    port: 8080\n  - name: web\n    namespace: prod\n    port: 8081\n'), env: {} });
  });

  test('an upstream port that conflicts with the admin port or another upstream is reported', () => {
    const file = configFile(
      [
        'services:',
        '  - name: web',
        '    port: 8080',
        '    upstreams:',
        '      - service: api',
        '        port: 9001',
        '      - service: db',
        '        port: 15000', // line 8: the admin port
        '  - name: worker',
        '    port: 8090',
        '    upstreams:',
        '      - service: api',
        '        port: 9001', // line 13: web's upstream port
      ].join('\n'),
    );
    const err = configError(() => loadAgentConfig({ file, env: {} }));
    const byPath = new Map(err.problems.map((p) => [p.path, p]));
    assert.equal(err.problems.length, 2, err.message);
    assert.match(byPath.get('services[0].upstreams[1].port')!.message, /port 15000 is already used by admin\.listen/);
    assert.equal(byPath.get('services[0].upstreams[1].port')!.line, 8);
    assert.match(byPath.get('services[1].upstreams[0].port')!.message, /port 9001 is already used by services\[0\]\.upstreams\[0\]/);
    assert.equal(byPath.get('services[1].upstreams[0].port')!.line, 13);
  });

  test('required service fields and name patterns are checked', () => {
    const file = configFile('services:\n  - protocol: udp\n  - name: Web_1\n    port: 80\n');
    const err = configError(() => loadAgentConfig({ file, env: {} }));
    const paths = err.problems.map((p) => p.path).sort();
    assert.deepEqual(paths, ['services[0].name', 'services[0].port', 'services[0].protocol', 'services[1].name']);
    assert.match(err.problems.find((p) => p.path === 'services[0].protocol')!.message, /one of http, http2, grpc, tcp/);
  });
});

describe('loadServerConfig', () => {
  test('a file with two mistakes reports both in one MESH_ERR_CONFIG, with field paths and lines', () => {
    const file = configFile('trustDomain: mesh.local\nworkloadCertTtl: 1s\nlisten: "0.0.0.0:70000"\nadminPort: 1\n');
    const err = configError(() => loadServerConfig({ file, env: {} }));
    const byPath = new Map(err.problems.map((p) => [p.path, p]));
    assert.equal(err.problems.length, 3, err.message);
    assert.equal(byPath.get('workloadCertTtl')?.line, 2);
    assert.match(byPath.get('workloadCertTtl')!.message, /at least 2000ms/);
    assert.equal(byPath.get('listen')?.line, 3);
    assert.equal(byPath.get('adminPort')?.line, 4);
    assert.match(byPath.get('adminPort')!.message, /unknown field/);
    assert.ok(err.message.includes(`adminPort (${file}:4)`), err.message);
  });

  test('env (MESH_*) overrides the file, flags override env; a bad flag names its origin', () => {
    const file = configFile('workloadCertTtl: 1h\ntrustDomain: file.local\n');
    assert.equal(loadServerConfig({ file, env: {} }).workloadCertTtlMs, 3_600_000);
    const env = { MESH_WORKLOAD_CERT_TTL: '2h', MESH_TRUST_DOMAIN: 'env.local' };
    const withEnv = loadServerConfig({ file, env });
    assert.equal(withEnv.workloadCertTtlMs, 7_200_000);
    assert.equal(withEnv.trustDomain, 'env.local');
    const withFlag = loadServerConfig({ file, env, flags: { workloadCertTtl: '3h' } });
    assert.equal(withFlag.workloadCertTtlMs, 10_800_000);
    assert.equal(withFlag.trustDomain, 'env.local');

    const err = configError(() => loadServerConfig({ file, env, flags: { workloadCertTtl: 'soon', listen: 'x' } }));
    assert.match(err.message, /workloadCertTtl \(from --workload-cert-ttl\): got "soon"/);
    assert.match(err.message, /listen \(from --listen\): got "x"/);
  });

  test('the returned config is deeply frozen', () => {
    const cfg = loadServerConfig({ env: {} });
    assertDeepFrozen(cfg);
    assert.ok(Object.isFrozen(cfg.listen));
  });

  test('an empty config yields the documented defaults (SERVER_DEFAULTS)', () => {
    const cfg = loadServerConfig({ env: {} });
    assert.equal(cfg.dataDir, resolve(SERVER_DEFAULTS.dataDir));
    assert.deepEqual(cfg.listen, SERVER_DEFAULTS.listen);
    assert.deepEqual(cfg.adminListen, SERVER_DEFAULTS.adminListen);
    assert.equal(cfg.trustDomain, SERVER_DEFAULTS.trustDomain);
    assert.equal(cfg.workloadCertTtlMs, SERVER_DEFAULTS.workloadCertTtlMs);
    assert.equal(cfg.nodeCertTtlMs, SERVER_DEFAULTS.nodeCertTtlMs);
    const ipv4 = Object.values(networkInterfaces()).flat().find((a) => a?.family === 'IPv4' && !a.internal)?.address ?? '127.0.0.1';
    assert.equal(cfg.advertise, `${ipv4}:${SERVER_DEFAULTS.listen.port}`);
  });

  test('SERVER_DEFAULTS match the @default values documented on ServerConfig', () => {
    const docs = documentedDefaults(join(__dirname, '../../../src/server/server-config.ts'));
    assert.equal(docs.get('dataDir'), `"${SERVER_DEFAULTS.dataDir}"`);
    assert.equal(docs.get('listen'), `${SERVER_DEFAULTS.listen.host}:${SERVER_DEFAULTS.listen.port}`);
    assert.equal(docs.get('adminListen'), `${SERVER_DEFAULTS.adminListen.host}:${SERVER_DEFAULTS.adminListen.port}`);
    assert.equal(docs.get('trustDomain'), `"${SERVER_DEFAULTS.trustDomain}"`);
    assert.equal(parseDuration(docs.get('workloadCertTtlMs')!), SERVER_DEFAULTS.workloadCertTtlMs);
    assert.equal(parseDuration(docs.get('nodeCertTtlMs')!.split(' ')[0]!), SERVER_DEFAULTS.nodeCertTtlMs);
  });

  test('advertise follows a specific listen host, and can be set', () => {
    assert.equal(loadServerConfig({ env: {}, flags: { listen: '10.1.2.3:7000' } }).advertise, '10.1.2.3:7000');
    assert.equal(loadServerConfig({ env: { MESH_ADVERTISE: 'mesh.example:443' } }).advertise, 'mesh.example:443');
  });

  test('a bad trust domain is reported with what is accepted', () => {
    const err = configError(() => loadServerConfig({ env: { MESH_TRUST_DOMAIN: 'Mesh_Local' } }));
    assert.match(err.message, /trustDomain \(from env MESH_TRUST_DOMAIN\): got "Mesh_Local", expected a DNS-like name/);
  });
});

/**
 * Reads `@default` tags from the TSDoc of interface fields: field name -> default text.
 * The TypeScript sources are the documentation users read for these settings.
 */
function documentedDefaults(file: string): Map<string, string> {
  const text = readFileSync(file, 'utf8');
  const out = new Map<string, string>();
  const re = /\/\*\*[^*]*?@default ([^*]+?)\s*\*\/\s*readonly (\w+)/g;
  for (let m = re.exec(text); m; m = re.exec(text)) out.set(m[2]!, m[1]!);
  return out;
}
