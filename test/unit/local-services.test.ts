// Local services: the Consul opt-in conventions (tag/meta, mesh-upstreams), the merge with the config file, diffs, reload plans, what gets registered, and the new config fields.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { loadAgentConfig, type AgentConfig } from '../../src/agent/agent-config';
import { planReload } from '../../src/agent/config-reload';
import { checkFor, registrationId, registrationsFor, unusedRegistrationFields } from '../../src/agent/consul-link';
import { diffServices, mergeLocalServices, noChanges, serviceFromConsul, upstreamKey } from '../../src/agent/local-services';
import { isMeshError } from '../../src/errors';
import { localServicesFromAgent, parseUpstreams, type ConsulLocalService } from '../../src/registry';

const tmp = mkdtempSync(join(tmpdir(), 'mesh-local-services-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const load = (yaml: string): AgentConfig => {
  const file = join(tmp, `a${n++}.yaml`);
  writeFileSync(file, yaml);
  return loadAgentConfig({ file, env: {} });
};
const problemsOf = (yaml: string): string[] => {
  try {
    load(yaml);
  } catch (err) {
    assert.ok(isMeshError(err, 'MESH_ERR_CONFIG'), String(err));
    return (err as unknown as { problems: { path: string; message: string }[] }).problems.map((p) => `${p.path}: ${p.message}`);
  }
  return assert.fail('expected MESH_ERR_CONFIG');
};

describe('opt-in conventions of /v1/agent/services', () => {
  const entry = (id: string, over: Record<string, unknown> = {}): Record<string, unknown> => ({ ID: id, Service: id, Tags: ['mesh'], Meta: {}, Address: '', Port: 8080, ...over });

  test('tag mesh or meta mesh-enabled=true opts in; mesh-enabled=false opts out even with the tag; others are ignored', () => {
    const { services, problems } = localServicesFromAgent({
      a: entry('a'),
      b: entry('b', { Tags: [], Meta: { 'mesh-enabled': 'true' } }),
      c: entry('c', { Meta: { 'mesh-enabled': 'false' } }),
      d: entry('d', { Tags: ['web'] }),
      e: entry('e-sidecar', { Kind: 'connect-proxy' }),
    });
    assert.deepEqual(services.map((s) => s.id), ['a', 'b']);
    assert.deepEqual(problems, []);
  });

  test('settings: name, namespace meta, Address (127.0.0.1 when empty) and Port, protocol meta, upstreams meta, labels from key=value tags and meta', () => {
    const { services } = localServicesFromAgent({
      '_nomad-task-1': entry('_nomad-task-1', { Service: 'web', Address: '10.0.0.5', Port: 8080, Tags: ['mesh', 'version=v2'], Meta: { 'mesh-namespace': 'shop', 'mesh-protocol': 'http', 'mesh-upstreams': ' api:9001/http , billing.payments:9002,grpcy:9003/grpc', team: 'cart' } }),
      plain: entry('plain', { Service: 'db', Port: 5432 }),
    });
    assert.deepEqual(services[0], {
      id: '_nomad-task-1',
      name: 'web',
      namespace: 'shop',
      address: '10.0.0.5',
      port: 8080,
      protocol: 'http',
      labels: { version: 'v2', team: 'cart' },
      upstreams: [
        { service: 'api', namespace: 'default', port: 9001, protocol: 'http' },
        { service: 'billing', namespace: 'payments', port: 9002, protocol: 'tcp' },
        { service: 'grpcy', namespace: 'default', port: 9003, protocol: 'grpc' },
      ],
    });
    assert.deepEqual(services[1], { id: 'plain', name: 'db', namespace: 'default', address: '127.0.0.1', port: 5432, protocol: 'tcp', labels: {}, upstreams: [] });
  });

  test('an invalid registration is skipped with one problem per field, naming the service; the others stay', () => {
    const { services, problems } = localServicesFromAgent({
      bad: entry('bad', { Service: 'Bad_Name', Port: 0, Meta: { 'mesh-protocol': 'udp', 'mesh-upstreams': 'api:99999,x', 'mesh-enabled': 'yes' }, Tags: [] }),
      ok: entry('ok'),
    });
    assert.deepEqual(services.map((s) => s.id), ['ok']);
    assert.deepEqual(
      problems.map((p) => `${p.id}/${p.service} ${p.field}: ${p.message}`),
      [
        'bad/Bad_Name Meta.mesh-enabled: got "yes", expected "true" or "false"',
        'bad/Bad_Name Service: got "Bad_Name", expected a mesh name (lower-case letters, digits and "-", at most 63 characters)',
        'bad/Bad_Name Port: got 0, expected the port the app listens on (1 to 65535)',
        'bad/Bad_Name Meta.mesh-protocol: got "udp", expected one of http, http2, grpc, tcp',
        'bad/Bad_Name Meta.mesh-upstreams: item "api:99999": port 99999 is not 1 to 65535',
        'bad/Bad_Name Meta.mesh-upstreams: item "x": expected service[.namespace]:localPort[/protocol], such as "api:9001/http" or "billing.payments:9002"',
      ],
    );
  });

  test('mesh-upstreams: every bad item is reported; a port listed twice is refused', () => {
    const seen: string[] = [];
    const ups = parseUpstreams('a:1/http,B:2,c.d:3/smtp,e:1,,f.g.h:4', (m) => seen.push(m));
    assert.deepEqual(ups, [{ service: 'a', namespace: 'default', port: 1, protocol: 'http' }]);
    assert.deepEqual(seen, [
      'item "B:2": service "B" is not a mesh name',
      'item "c.d:3/smtp": protocol "smtp" is not one of http, http2, grpc, tcp',
      'item "e:1": port 1 is listed twice',
      'item "f.g.h:4": expected service[.namespace]:localPort[/protocol], such as "api:9001/http" or "billing.payments:9002"',
    ]);
  });
});

describe('merging config and Consul services', () => {
  const ports = { inbound: { host: '0.0.0.0', port: 15443 }, admin: { host: '127.0.0.1', port: 15000 } };
  const consul = (id: string, name: string, upstreams: ConsulLocalService['upstreams'] = []): ConsulLocalService => ({ id, name, namespace: 'default', address: '127.0.0.1', port: 8000, protocol: 'tcp', labels: {}, upstreams });
  const config = load('services:\n  - name: web\n    port: 8080\n    upstreams: [{ service: api, port: 9001 }]\n').services;

  test('config wins a name clash, the first Consul registration wins another, a taken upstream port leaves the service out', () => {
    const { services, warnings } = mergeLocalServices(config, [
      consul('c1', 'web'),
      consul('c2', 'orders', [{ service: 'api', namespace: 'default', port: 9002, protocol: 'http' }]),
      consul('c3', 'orders'),
      consul('c4', 'clash', [{ service: 'api', namespace: 'default', port: 9001, protocol: 'tcp' }]),
      consul('c5', 'clash2', [{ service: 'api', namespace: 'default', port: 15000, protocol: 'tcp' }]),
      consul('c6', 'clash3', [{ service: 'x', namespace: 'default', port: 9002, protocol: 'tcp' }]),
    ], ports);
    assert.deepEqual(services.map((s) => `${s.name}:${s.origin}`), ['web:config', 'orders:consul']);
    assert.deepEqual(services[1]!.upstreams, [{ service: 'api', namespace: 'default', listen: { host: '127.0.0.1', port: 9002 }, protocol: 'http', servicePort: 9002 }]);
    assert.deepEqual(warnings.map((w) => `${w.id}: ${w.message}`), [
      'c1: the config file has this service too; the config file wins',
      'c3: Consul registration c2 is this service too; it came first and wins',
      'c4: upstream port 9001 is already used by upstream default/api of default/web (config); the service is left out',
      'c5: upstream port 15000 is already used by the admin port; the service is left out',
      'c6: upstream port 9002 is already used by upstream default/api of default/orders (Consul c2); the service is left out',
    ]);
  });

  test('diff: services and upstreams added, removed and changed, by key', () => {
    const before = mergeLocalServices(config, [consul('c1', 'orders', [{ service: 'api', namespace: 'default', port: 9002, protocol: 'tcp' }])], ports).services;
    const after = mergeLocalServices(config, [{ ...consul('c1', 'orders', [{ service: 'api', namespace: 'default', port: 9003, protocol: 'tcp' }]), port: 8001 }, consul('c9', 'cart')], ports).services;
    const d = diffServices(before, after);
    assert.deepEqual(d, {
      servicesAdded: ['default/cart'],
      servicesRemoved: [],
      servicesChanged: ['default/orders'],
      upstreamsAdded: ['default/orders->default/api@127.0.0.1:9003/tcp'],
      upstreamsRemoved: ['default/orders->default/api@127.0.0.1:9002/tcp'],
    });
    assert.ok(noChanges(diffServices(after, after)));
    assert.equal(upstreamKey(after[0]!, after[0]!.upstreams[0]!), 'default/web->default/api@127.0.0.1:9001/tcp');
    assert.equal(serviceFromConsul(consul('x', 'x')).origin, 'consul');
  });
});

describe('config fields for registration and local services', () => {
  test('tags, meta and check are read; consul.localServices and resyncInterval have their defaults', () => {
    const c = load(`consul: { registerServices: true }
services:
  - { name: a, port: 1, tags: [v1, primary], meta: { version: "2", team: web }, check: { http: /health, interval: 5s, timeout: 1s } }
  - { name: b, port: 2, check: { tcp: true } }
  - { name: c, port: 3, check: { ttl: 30s } }
  - { name: d, port: 4 }
`);
    assert.equal(c.consul!.localServices, false);
    assert.equal(c.consul!.resyncIntervalMs, 30_000);
    const [a, b, cc, d] = c.services;
    assert.deepEqual([a!.tags, a!.meta, a!.check], [['v1', 'primary'], { version: '2', team: 'web' }, { http: '/health', intervalMs: 5000, timeoutMs: 1000 }]);
    assert.deepEqual(b!.check, { tcp: true, intervalMs: 10_000, timeoutMs: 2000 });
    assert.deepEqual(cc!.check, { ttlMs: 30_000 });
    assert.equal(d!.check, undefined);
    assert.equal(load('consul: { localServices: true, resyncInterval: 2s }\n').consul!.resyncIntervalMs, 2000);
  });

  test('bad tags, meta and checks are reported with their field paths', () => {
    assert.deepEqual(
      problemsOf(`services:
  - name: a
    port: 1
    tags: v1
    meta: { "bad key": x, consul-x: y, mesh-inbound-port: "1" }
    check: { http: health, tcp: true }
  - { name: b, port: 2, tags: [""], check: { ttl: 1s, interval: 5s } }
  - { name: c, port: 3, check: { tcp: false } }
  - { name: d, port: 4, check: {} }
`),
      [
        'services[0].tags: must be a list of strings, such as [v1, primary]',
        'services[0].meta.bad key: a meta key is letters, digits, "_" and "-", at most 128 characters',
        'services[0].meta.consul-x: the prefix "consul-" is reserved by Consul',
        'services[0].meta.mesh-inbound-port: mesh-inbound-port is set by the agent itself',
        'services[0].check: has http and tcp; give exactly one of http, tcp or ttl',
        'services[1].tags[0]: must be a non-empty string',
        'services[1].check.ttl: got "1s", expected a duration such as "500ms", "10s", "1h" of at least 3000ms',
        'services[1].check.interval: applies to http and tcp checks; a ttl check is kept by the agent every ttl/3',
        'services[2].check.tcp: must be true (leave the check out for the default TCP check)',
        'services[3].check: needs one of http (a path such as "/health"), tcp (true) or ttl (a duration)',
      ],
    );
    assert.deepEqual(problemsOf('services: [{ name: a, port: 1, check: { http: health } }]\n'), ['services[0].check.http: got "health", expected a path on the service\'s app starting with "/", such as "/health"']);
  });
});

describe('what the agent registers', () => {
  const c = load(`nodeName: n1
address: 10.0.0.7
consul: { registerServices: true }
services:
  - { name: web, port: 8080, address: 0.0.0.0, protocol: http, tags: [v1], meta: { team: shop }, check: { http: /healthz } }
  - { name: db, namespace: data, port: 5432, check: { ttl: 9s } }
  - { name: cache, port: 6379 }
`);

  test('itself, then each config service with its tags (+ protocol=), meta and check relative to its target', () => {
    const regs = registrationsFor(c, { id: 'abc', inbound: { host: '0.0.0.0', port: 15443 }, admin: { host: '127.0.0.1', port: 15000 } });
    assert.deepEqual(regs[0], { id: 'mesh-agent-n1', name: 'mesh-agent', namespace: 'default', address: '10.0.0.7', port: 15443, meta: { 'mesh-agent-id': 'abc' }, check: { http: 'http://127.0.0.1:15000/ready', intervalMs: 10_000, timeoutMs: 2000 } });
    assert.deepEqual(regs[1], { id: 'web-n1', name: 'web', namespace: 'default', address: '10.0.0.7', port: 8080, tags: ['v1', 'protocol=http'], meta: { team: 'shop' }, check: { http: 'http://127.0.0.1:8080/healthz', intervalMs: 10_000, timeoutMs: 2000 } });
    assert.deepEqual([regs[2]!.id, regs[2]!.check], ['db-data-n1', { ttlMs: 9000, probe: { host: '127.0.0.1', port: 5432 } }]);
    assert.deepEqual(regs[3]!.check, { tcp: '127.0.0.1:6379', intervalMs: 10_000, timeoutMs: 2000 }, 'the default check: TCP to the target');
    assert.equal(registrationId({ name: 'x', namespace: 'default' }, 'n'), 'x-n');
    assert.deepEqual(checkFor({ ...c.services[2]!, target: { host: '::', port: 1 } }), { tcp: '[::1]:1', intervalMs: 10_000, timeoutMs: 2000 });
  });

  test('without registerServices, only itself; tags, meta and check set there are named as having no effect', () => {
    const plain = load('nodeName: n1\nconsul: {}\nservices: [{ name: web, port: 1 }, { name: db, port: 2, check: { tcp: true } }]\n');
    assert.deepEqual(registrationsFor(plain, { id: 'abc', inbound: { host: '0.0.0.0', port: 1 }, admin: { host: '127.0.0.1', port: 2 } }).map((r) => r.id), ['mesh-agent-n1']);
    assert.deepEqual(unusedRegistrationFields(plain), ['default/db']);
    assert.deepEqual(unusedRegistrationFields(c), [], 'with registerServices they are used');
  });
});

describe('reload plans', () => {
  test('restart-only fields are kept and named; endpointsFile, consul and address changes are flagged', () => {
    const running = load('nodeName: a\ninbound: { listen: "0.0.0.0:15443" }\nservices: [{ name: web, port: 1 }]\n');
    const next = load('nodeName: b\ninbound: { listen: "0.0.0.0:16443" }\naddress: 10.0.0.1\nendpointsFile: eps.yaml\nconsul: {}\nservices: [{ name: api, port: 2 }]\n');
    const plan = planReload(running, next);
    assert.deepEqual(plan.restartNeeded, ['nodeName ("a" -> "b")', 'inbound (0.0.0.0:15443 -> 0.0.0.0:16443)']);
    assert.equal(plan.config.nodeName, 'a');
    assert.deepEqual(plan.config.inbound, running.inbound);
    assert.equal(plan.config.services[0]!.name, 'api', 'services come from the new file');
    assert.deepEqual([plan.endpointsFileChanged, plan.consulChanged, plan.addressChanged], [true, true, true]);
    assert.ok(Object.isFrozen(plan.config));
    const same = planReload(running, running);
    assert.deepEqual([same.restartNeeded, same.endpointsFileChanged, same.consulChanged, same.addressChanged], [[], false, false, false]);
  });
});
