// Transparent capture across hosts: an unmodified client in host A, running as an ordinary user with no mesh
// settings, calls service api in host B by B's address and by its DNS name at the service's own port; iptables
// in A's namespace leads it through the agents over mTLS (read off the bridge), inbound capture in B keeps the app
// from being reached around the mesh, and stopping the agent or `capture remove` leaves no mesh chain behind.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CaptureStatus } from '../../src/capture';
import { tempDir } from '../helpers/processes';
import { hostCli, startHostAgent, startHostServer } from './host-mesh';
import { HostNetwork, hostNetworkUnavailable, type Host } from './host-network';
import { clientHelloServerName, tcpStreams, tlsRecords } from './pcap';

/** The unmodified app's user: not the agent's (root here), so its connections are captured. */
const APP_USER = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];

describe('transparent capture: an unmodified app in host A reaches api in host B through the mesh', { skip: hostNetworkUnavailable(['tcpdump', 'curl', 'iptables-restore', 'setpriv']) }, () => {
  let net: HostNetwork | undefined;
  const dir = tempDir('mesh-capture-');
  let s: Host;
  let a: Host;
  let b: Host;

  before(async () => {
    net = await HostNetwork.create('capture', '10.79.0');
    s = await net.addHost('s', 10);
    a = await net.addHost('a', 11);
    b = await net.addHost('b', 12);
    // Host A's resolver asks the agent's DNS responder, as /etc/resolv.conf on a captured VM would.
    net.setResolvConf(a, 'nameserver 127.0.0.1\noptions timeout:2 attempts:2\n');
  });

  after(async () => {
    await net?.destroy();
    dir.cleanup();
  });

  const cli = (host: Host, args: string[]): Promise<string> => hostCli(net!, host, args);
  const natTable = async (host: Host): Promise<string> => (await net!.run(host, ['iptables-save', '-t', 'nat'])).stdout;
  const startAgent = (host: Host, yaml: string, token: string, extra: string[] = []) => startHostAgent(net!, host, dir.dir, yaml, token, extra);
  const waitUntil = async (what: string, check: () => Promise<boolean>): Promise<void> => {
    const deadline = Date.now() + 20_000;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  it('captures by address and by name with mTLS on the wire, leaves other traffic alone, and cleans up', async () => {
    const { token } = await startHostServer(net!, s, dir.dir);

    // The api app listens on every address of B: only inbound capture keeps callers from reaching it around the mesh.
    const app = net!.meshAgent(b, 'api app', ['sample-service', '--name', 'api', '--host', '0.0.0.0', '--port', '8080']);
    await app.waitFor(/listening on 0\.0\.0\.0:8080/);
    // A service outside the mesh: capture must let it through as it is (and the bridge shows its plaintext).
    const plain = net!.meshAgent(b, 'plain app', ['sample-service', '--name', 'plain', '--host', b.address, '--port', '8081']);
    await plain.waitFor(/listening on/);

    const capture = await net!.captureBridge('tcp');
    const endpoints = join(dir.dir, 'endpoints.yaml');
    writeFileSync(endpoints, `services:\n  api: [{ address: ${b.address}, port: 15443 }]\n`);
    const [tokenA, tokenB] = [await token(), await token()];
    const [agentA, agentB] = await Promise.all([
      // Host A turns capture on with the flag; its upstream listener port (15001) is nothing the app knows of.
      startAgent(
        a,
        `address: ${a.address}\ninbound: { listen: "${a.address}:15443" }\nadmin: { listen: "127.0.0.1:15000" }\nendpointsFile: ${endpoints}\nservices:\n  - name: web\n    port: 8080\n    upstreams: [{ service: api, port: 15001, servicePort: 8080, protocol: http }]\n`,
        tokenA,
        ['--capture'],
      ),
      startAgent(
        b,
        `address: ${b.address}\ninbound: { listen: "${b.address}:15443" }\nadmin: { listen: "127.0.0.1:15000" }\nservices: [{ name: api, port: 8080, protocol: http }]\ncapture: { enabled: true, dns: { enabled: false } }\n`,
        tokenB,
      ),
    ]);
    // The endpoint's address joins the rules once discovery has delivered it.
    await waitUntil(`A's rules capture ${b.address}:8080`, async () => (await natTable(a)).includes(`-d ${b.address}/32 -p tcp -m tcp --dport 8080`));
    assert.match(await natTable(b), /-A MESH_INBOUND -p tcp -m tcp --dport 8080 -j REDIRECT --to-ports 15443/);

    const secretPath = `/orders/${randomBytes(12).toString('hex')}`;
    const secretHeader = randomBytes(12).toString('hex');
    const namePath = `/by-name/${randomBytes(12).toString('hex')}`;
    const plainMarker = `/plain-${randomBytes(12).toString('hex')}`;
    const curl = (args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> => net!.run(a, [...APP_USER, 'curl', '-sS', '--max-time', '20', ...args]);

    const byAddress = await curl(['-H', `x-order-secret: ${secretHeader}`, `http://${b.address}:8080${secretPath}`]);
    const byName = await curl([`http://api.service.consul:8080${namePath}`]);
    const resolved = await net!.run(a, ['getent', 'hosts', 'api.mesh']);
    const control = await curl([`http://${b.address}:8081${plainMarker}`]);
    // The agent's own user is never captured: root in A reaches B's port 8080 directly, where B's inbound capture
    // hands the plaintext to B's agent, whose port is TLS only while every service is STRICT: it is closed unanswered
    // (the same call answers 200 from the app once capture is removed, below).
    const around = await net!.run(a, ['curl', '-sS', '--max-time', '20', '-o', '/dev/null', '-w', '%{http_code}', `http://${b.address}:8080/around`]);
    const pcap = await capture.stop();

    assert.equal(byAddress.code, 0, byAddress.stderr);
    const answer = JSON.parse(byAddress.stdout) as { service: string; path: string; callerIdentity: string };
    assert.equal(answer.service, 'api');
    assert.equal(answer.path, secretPath);
    assert.equal(answer.callerIdentity, 'spiffe://mesh.local/ns/default/sa/web', 'B verified the caller on the mTLS connection: the call went through both agents');
    assert.equal(byName.code, 0, byName.stderr);
    assert.equal((JSON.parse(byName.stdout) as { path: string; callerIdentity: string }).callerIdentity, 'spiffe://mesh.local/ns/default/sa/web');
    assert.match(resolved.stdout, /^127\.240\.\d+\.\d+\s+api\.mesh/, 'the agent answers the service name with a virtual IP');
    assert.equal(control.code, 0, `a destination outside the mesh is reached unchanged: ${control.stderr}`);
    assert.equal(around.stdout, '000', 'plaintext to the captured port reaches B\'s agent, not the app');
    assert.match(around.stderr, /Empty reply from server/, 'accepted and closed by the TLS-only inbound port');

    const streams = tcpStreams(pcap);
    assert.ok(!streams.some((st) => st.from.startsWith(`${a.address}:`) && st.to === `${b.address}:8080` && st.data.includes(secretPath)), 'the captured call never went to B:8080 itself');
    const toInbound = streams.filter((st) => st.from.startsWith(`${a.address}:`) && st.to === `${b.address}:15443` && st.data.length > 0);
    assert.ok(toInbound.length > 0, `the calls crossed the bridge to B's inbound port (saw ${streams.map((st) => `${st.from}>${st.to}`).join(', ')})`);
    for (const st of toInbound) {
      assert.equal(clientHelloServerName(st.data), 'api.default.mesh.local');
      const { records, rest } = tlsRecords(st.data);
      assert.equal(rest.length, 0, `${st.from} > ${st.to}: ${rest.length} bytes that are not TLS records`);
      assert.ok(records.slice(1).every((r) => r.type === 23 || r.type === 20), 'only encrypted records after the hello');
    }
    const wire = pcap.toString('latin1');
    assert.ok(wire.includes(plainMarker), 'control: plaintext outside the mesh is visible on the bridge');
    for (const secret of [secretPath.slice(8), secretHeader, namePath.slice(9)]) assert.ok(!wire.includes(secret), `${secret} never crossed the bridge in the clear`);

    // The agent's status shows what it captures and what its DNS responder answered.
    const statusArgs = ['status', '--agent', '--state-dir', join(dir.dir, 'a-state')];
    const status = (JSON.parse(await cli(a, [...statusArgs, '-o', 'json'])) as { capture: CaptureStatus }).capture;
    assert.equal(status.virtualIps['api.default'], resolved.stdout.split(/\s+/)[0]);
    assert.ok(status.destinations.some((d) => d.dial === `${b.address}:8080` && d.listener === '127.0.0.1:15001'), JSON.stringify(status.destinations));
    assert.ok(status.dns!.answered >= 2, 'the name lookups were answered by the agent');
    assert.match(await cli(a, statusArgs), new RegExp(`CAPTURED[\\s\\S]*${b.address.replaceAll('.', '\\.')}:8080\\s+api\\.default\\s+127\\.0\\.0\\.1:15001`));

    // Stopping the agent removes its chains; `capture remove` does the same beside a running agent.
    assert.equal(await agentA.stop('SIGTERM'), 0, agentA.stderr);
    assert.doesNotMatch(await natTable(a), /MESH_/, 'no mesh chain left in A after the agent stopped');
    assert.match(await cli(b, ['capture', 'remove']), /capture removed/);
    assert.doesNotMatch(await natTable(b), /MESH_/, 'no mesh chain left in B after capture remove');
    assert.equal((JSON.parse(await cli(b, ['capture', 'status', '-o', 'json'])) as { installed: boolean }).installed, false);
    // Without capture the same unmodified call goes where it is addressed: no black hole is left behind.
    const direct = await curl([`http://${b.address}:8080/direct`]);
    const directRoot = await net!.run(a, ['curl', '-sS', '--max-time', '20', '-o', '/dev/null', '-w', '%{http_code}', `http://${b.address}:8080/around`]);
    assert.equal(directRoot.stdout, '200', 'without inbound capture the app itself answers');
    assert.equal(direct.code, 0, direct.stderr);
    assert.equal((JSON.parse(direct.stdout) as { callerIdentity: string | null }).callerIdentity ?? null, null, 'now the app answers directly, with no mesh caller');
    await agentB.stop('SIGTERM');
  });
});
