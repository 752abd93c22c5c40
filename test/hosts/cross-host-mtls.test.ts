// Three hosts (network namespaces on a bridge): an unmodified curl in host A reaches an app in host B through the
// agents, and the bytes on the bridge are TLS from the first byte, with no plaintext of the request or response.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { tempDir } from '../helpers/processes';
import { startHostAgent, startHostServer } from './host-mesh';
import { HostNetwork, hostNetworkUnavailable, type Host } from './host-network';
import { clientHelloServerName, tcpStreams, tlsRecords } from './pcap';

describe('several hosts: web in host A calls api in host B over mTLS', { skip: hostNetworkUnavailable(['tcpdump', 'curl']) }, () => {
  let net: HostNetwork | undefined;
  const dir = tempDir('mesh-hosts-');
  let s: Host;
  let a: Host;
  let b: Host;

  before(async () => {
    net = await HostNetwork.create('xhost');
    s = await net.addHost('s', 10);
    a = await net.addHost('a', 11);
    b = await net.addHost('b', 12);
  });

  after(async () => {
    await net?.destroy();
    dir.cleanup();
  });

  const startAgent = (host: Host, yaml: string, token: string) => startHostAgent(net!, host, dir.dir, yaml, token);

  it('an unmodified client in A reaches B by its namespace address; the bridge carries only TLS', async () => {
    const { token } = await startHostServer(net!, s, dir.dir);

    // The app in B listens on B's loopback only: from A it can be reached through the mesh and no other way.
    const app = net!.meshAgent(b, 'api app', ['sample-service', '--name', 'api', '--port', '8080']);
    await app.waitFor(/listening on 127\.0\.0\.1:8080/);
    // A deliberately plain service on B's bridge address: the capture must see its bytes (proof that it would see
    // plaintext if the mesh leaked any).
    const plain = net!.meshAgent(b, 'plain app', ['sample-service', '--name', 'plain', '--host', b.address, '--port', '8081']);
    await plain.waitFor(/listening on/);

    // From before the first agent starts: enrollment and the channel to the server are on the wire too.
    const capture = await net!.captureBridge('tcp');
    const agentB = await startAgent(b, `address: ${b.address}\ninbound: { listen: "${b.address}:15443" }\nadmin: { listen: "127.0.0.1:15000" }\nservices: [{ name: api, port: 8080, protocol: http }]\n`, await token());
    assert.match(agentB.stderr + agentB.stdout, new RegExp(`inbound ${b.address.replaceAll('.', '\\.')}:15443`));
    const endpoints = join(dir.dir, 'endpoints.yaml');
    writeFileSync(endpoints, `services:\n  api: [{ address: ${b.address}, port: 15443 }]\n`);
    await startAgent(
      a,
      `address: ${a.address}\ninbound: { listen: "${a.address}:15443" }\nadmin: { listen: "127.0.0.1:15000" }\nendpointsFile: ${endpoints}\nservices:\n  - name: web\n    port: 8080\n    upstreams: [{ service: api, port: 9001, protocol: http }]\n`,
      await token(),
    );

    const secretPath = `/orders/${randomBytes(12).toString('hex')}`;
    const secretHeader = randomBytes(12).toString('hex');
    const plainMarker = `/plain-${randomBytes(12).toString('hex')}`;
    // curl knows nothing of the mesh: it calls a local port, as an app configured with "api at 127.0.0.1:9001" would.
    const viaMesh = await net!.run(a, ['curl', '-sS', '--max-time', '20', '-H', `x-order-secret: ${secretHeader}`, `http://127.0.0.1:9001${secretPath}`]);
    const direct = await net!.run(a, ['curl', '-sS', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}', `http://${b.address}:8080/`]);
    const control = await net!.run(a, ['curl', '-sS', '--max-time', '20', `http://${b.address}:8081${plainMarker}`]);
    const pcap = await capture.stop();

    assert.equal(viaMesh.code, 0, viaMesh.stderr);
    const answer = JSON.parse(viaMesh.stdout) as { service: string; path: string; callerIdentity: string };
    assert.equal(answer.service, 'api', 'the answer comes from the app in host B');
    assert.equal(answer.path, secretPath);
    assert.equal(answer.callerIdentity, 'spiffe://mesh.local/ns/default/sa/web', 'B verified the caller on the mTLS connection');
    assert.notEqual(direct.code, 0, 'the app in B is not reachable from A except through the mesh');
    assert.equal(control.code, 0, control.stderr);

    const streams = tcpStreams(pcap);
    const toInbound = streams.filter((st) => st.from.startsWith(`${a.address}:`) && st.to === `${b.address}:15443` && st.data.length > 0);
    assert.ok(toInbound.length > 0, `a connection from A to B's inbound port crossed the bridge (saw ${streams.map((st) => `${st.from}>${st.to}`).join(', ')})`);
    for (const st of toInbound) assert.equal(clientHelloServerName(st.data), 'api.default.mesh.local', 'it opens with a TLS ClientHello naming the service');
    const back = streams.filter((st) => st.from === `${b.address}:15443` && st.data.length > 0);
    assert.ok(back.length > 0, 'B answered on the connection');

    // Every stream between hosts, except the deliberate plain one, is whole TLS records from its first byte:
    // the mesh data path (A <-> B) and the agents' channel to the server (A, B <-> S).
    const meshStreams = streams.filter((st) => st.data.length > 0 && !st.from.endsWith(':8081') && !st.to.endsWith(':8081'));
    for (const st of meshStreams) {
      const { records, rest } = tlsRecords(st.data);
      assert.equal(rest.length, 0, `${st.from} > ${st.to}: ${rest.length} bytes that are not TLS records`);
      assert.equal(records[0]?.type, 22, `${st.from} > ${st.to} starts with a handshake record`);
      // TLS 1.3: after the hellos everything, the certificates included, is an encrypted application_data record.
      assert.ok(records.slice(1).every((r) => r.type === 23 || r.type === 20), `${st.from} > ${st.to}: only encrypted records after the hello`);
    }
    assert.ok(meshStreams.filter((st) => st.to === `${s.address}:15010`).length >= 4, 'enrollment and the channel of both agents to host S crossed the bridge too');

    const wire = pcap.toString('latin1');
    assert.ok(wire.includes(plainMarker), 'control: plaintext sent outside the mesh is visible in the capture');
    assert.ok(!wire.includes(secretPath.slice(8)), 'the request path never crossed the bridge in the clear');
    assert.ok(!wire.includes(secretHeader), 'the request header never crossed the bridge in the clear');
    assert.ok(!wire.includes('"service": "api"'), 'the response body never crossed the bridge in the clear');
  });
});
