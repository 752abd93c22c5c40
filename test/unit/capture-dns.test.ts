// The capture DNS responder (answers for mesh names, REFUSED for others, FORMERR for junk) and the capture config block.

import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { loadAgentConfig } from '../../src/agent/agent-config';
import { answerQuery, DnsResponder, meshNameLookup } from '../../src/capture';
import { silentLogger } from '../../src/telemetry';

const IPS = new Map([
  ['api.default', '127.240.1.2'],
  ['billing.payments', '127.240.9.9'],
]);
const lookup = meshNameLookup(IPS);

/** A DNS query for `name` of `type` (1 A, 28 AAAA), id 0x1234, recursion desired. */
function query(name: string, type = 1): Buffer {
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  return Buffer.concat([Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]), ...labels, Buffer.from([0, 0, type, 0, 1])]);
}
const rcode = (b: Buffer): number => b[3]! & 0x0f;
const answers = (b: Buffer): number => b.readUInt16BE(6);

describe('capture DNS', () => {
  test('mesh names: <name>.service.consul, <name>.service.<dc>.consul, <name>.mesh, <name>.<namespace>.mesh', () => {
    assert.deepEqual(lookup('api.service.consul'), { zone: true, ip: '127.240.1.2' });
    assert.deepEqual(lookup('api.service.dc1.consul'), { zone: true, ip: '127.240.1.2' });
    assert.deepEqual(lookup('billing.service.consul'), { zone: true, ip: '127.240.9.9' }, 'the only namespace with that name');
    assert.deepEqual(lookup('api.mesh'), { zone: true, ip: '127.240.1.2' });
    assert.deepEqual(lookup('billing.payments.mesh'), { zone: true, ip: '127.240.9.9' });
    assert.deepEqual(lookup('billing.mesh'), { zone: true, ip: undefined }, '<name>.mesh is the default namespace');
    assert.deepEqual(lookup('nope.service.consul'), { zone: true, ip: undefined });
    assert.deepEqual(lookup('node1.node.consul'), { zone: true, ip: undefined });
    assert.deepEqual(lookup('example.com'), { zone: false });
  });

  test('answers: A with the virtual IP (authoritative, ttl 30), NODATA for AAAA, NXDOMAIN for unknown mesh names, REFUSED elsewhere', () => {
    const a = answerQuery(query('API.service.consul'), lookup)!;
    assert.equal(a.readUInt16BE(0), 0x1234, 'the id is echoed');
    assert.equal(a[2]! & 0x85, 0x85, 'a response, authoritative, recursion-desired echoed');
    assert.equal(rcode(a), 0);
    assert.equal(answers(a), 1);
    assert.deepEqual([...a.subarray(-4)], [127, 240, 1, 2]);
    assert.equal(a.readUInt32BE(a.length - 10), 30);
    const aaaa = answerQuery(query('api.mesh', 28), lookup)!;
    assert.deepEqual([rcode(aaaa), answers(aaaa)], [0, 0]);
    assert.deepEqual([rcode(answerQuery(query('nope.mesh'), lookup)!), (answerQuery(query('nope.mesh'), lookup)![2]! & 0x04) !== 0], [3, true]);
    assert.equal(rcode(answerQuery(query('example.com'), lookup)!), 5);
  });

  test('junk gets FORMERR or nothing, never a crash', () => {
    assert.equal(answerQuery(Buffer.from([1, 2, 3]), lookup), undefined, 'shorter than a header');
    const response = query('api.mesh');
    response[2]! |= 0x80;
    assert.equal(answerQuery(response, lookup), undefined, 'a response is not answered');
    assert.equal(rcode(answerQuery(query('api.mesh').subarray(0, 16), lookup)!), 1, 'a cut question');
    const pointer = Buffer.concat([query('x').subarray(0, 12), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1])]);
    assert.equal(rcode(answerQuery(pointer, lookup)!), 1, 'a compression pointer in the question');
    const two = query('api.mesh');
    two.writeUInt16BE(2, 4);
    assert.equal(rcode(answerQuery(two, lookup)!), 1, 'two questions');
    const notify = query('api.mesh');
    notify[2] = 4 << 3;
    assert.equal(rcode(answerQuery(notify, lookup)!), 4, 'an opcode other than QUERY');
    for (let i = 0; i < 2000; i++) {
      const q = query('api.service.consul');
      q[12 + (i % (q.length - 12))] = (i * 7919) & 0xff;
      answerQuery(q, lookup);
    }
  });

  test('a real resolver gets the answers over UDP', async () => {
    const dns = new DnsResponder(lookup, silentLogger);
    const at = await dns.listen({ host: '127.0.0.1', port: 0 });
    try {
      const r = new Resolver({ timeout: 2000, tries: 1 });
      r.setServers([`127.0.0.1:${at.port}`]);
      assert.deepEqual(await r.resolve4('billing.payments.mesh'), ['127.240.9.9']);
      await assert.rejects(r.resolve4('nope.mesh'), { code: 'ENOTFOUND' });
      await assert.rejects(r.resolve4('example.com'), { code: 'EREFUSED' });
      assert.deepEqual(dns.stats, { answered: 2, refused: 1, malformed: 0 });
    } finally {
      await dns.close();
    }
  });
});

describe('capture config', () => {
  const dir = mkdtempSync(join(tmpdir(), 'capture-config-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const file = (text: string): string => {
    const f = join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(f, text);
    return f;
  };

  test('defaults: off, 127.240.0.0/16, inbound redirected, DNS on 127.0.0.1:53; --capture turns it on; servicePort defaults to the port', () => {
    const cfg = loadAgentConfig({ file: file('services: [{ name: web, port: 8080, upstreams: [{ service: api, port: 15001 }] }]\n'), env: {} });
    assert.deepEqual(cfg.capture, { enabled: false, virtualIpRange: '127.240.0.0/16', redirectInbound: true, excludeUids: [], excludeCidrs: [], excludePorts: [], excludeInboundPorts: [], dns: { host: '127.0.0.1', port: 53 } });
    assert.equal(cfg.services[0]!.upstreams[0]!.servicePort, 15001);
    assert.equal(loadAgentConfig({ flags: { capture: true }, env: {} }).capture.enabled, true);
    assert.equal(loadAgentConfig({ env: { MESH_CAPTURE: 'true' } }).capture.enabled, true);
  });

  test('every field read, every bad value named', () => {
    const cfg = loadAgentConfig({
      file: file('capture: { enabled: true, virtualIpRange: 10.240.0.0/16, redirectInbound: false, excludeUids: [1000], excludeCidrs: [10.0.0.0/8], excludePorts: [22], excludeInboundPorts: [9090], dns: { listen: "127.0.0.1:5353" } }\n'),
      env: {},
    });
    assert.deepEqual(cfg.capture, { enabled: true, virtualIpRange: '10.240.0.0/16', redirectInbound: false, excludeUids: [1000], excludeCidrs: ['10.0.0.0/8'], excludePorts: [22], excludeInboundPorts: [9090], dns: { host: '127.0.0.1', port: 5353 } });
    assert.equal(loadAgentConfig({ file: file('capture: { dns: { enabled: false } }\n'), env: {} }).capture.dns, undefined);
    assert.throws(
      () => loadAgentConfig({ file: file('capture: { virtualIpRange: 10.240.0.1/16, excludeCidrs: [nope], excludePorts: [0, 22], excludeUids: x, colour: red }\n'), env: {} }),
      (e: Error) => {
        assert.match(e.message, /capture\.virtualIpRange.*has host bits set/);
        assert.match(e.message, /capture\.excludeCidrs\[0\].*"nope" is not an IPv4 CIDR/);
        assert.match(e.message, /capture\.excludePorts\[0\].*got 0, expected a port/);
        assert.match(e.message, /capture\.excludeUids.*must be a list/);
        assert.match(e.message, /capture\.colour.*unknown field/);
        return true;
      },
    );
  });
});
