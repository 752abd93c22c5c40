// Policy gossip through real agents: node-a, cut off from the server after enrolling, gets a new version from node-b
// (the agent it calls), verifies it and applies it; a peer with a valid mesh identity that offers a tampered version
// is refused, and node-a keeps the version it holds; a workload certificate cannot gossip (agents' node identities only).

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, createServer, type Server, type TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { GOSSIP_ALPN, policyDigest, type PolicyDocumentSource } from '../../src/protocol';
import { startHttpApp } from '../helpers/apps';
import { agentStatus, TestMesh, type AgentHandle, type ServerHandle } from '../helpers/mesh';
import { freePort, runMeshAgent } from '../helpers/processes';

interface PolicyStatus {
  meshVersion: number | null;
  meshDigest: string | null;
  gossip: { pulls: number; refused: number; lastPull: { version: number; from: string } | null; lastRefusal: { version: number; error: string } | null } | null;
}

const DR = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: api }
spec: { host: api, trafficPolicy: { loadBalancer: { simple: LEAST_REQUEST } } }
`;
const VS_FAULT = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: api }
spec:
  hosts: [api]
  http:
    - match: [{ uri: { prefix: /gossip } }]
      fault: { abort: { percentage: { value: 100 }, httpStatus: 418 } }
      route: [{ destination: { host: api } }]
    - route: [{ destination: { host: api } }]
`;
const GOSSIP = 'gossip: { interval: 200ms }\n';

describe('policy gossip between real agents', () => {
  const mesh = new TestMesh();
  let app: Awaited<ReturnType<typeof startHttpApp>>;
  let server: ServerHandle;
  let a: AgentHandle;
  let b: AgentHandle;
  let upstream = 0;
  let fake: Server | undefined;

  const policyOf = async (agent: AgentHandle): Promise<PolicyStatus> => ((await agentStatus(agent)) as unknown as { policy: PolicyStatus }).policy;
  const until = async (what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> => {
    for (const deadline = Date.now() + timeoutMs; !(await check()); await new Promise((r) => setTimeout(r, 100))) {
      if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms`);
    }
  };
  const apply = async (name: string, text: string): Promise<void> => {
    const file = join(mesh.root, name);
    writeFileSync(file, text);
    const r = await runMeshAgent(['apply', '-f', file, '--admin', server.adminAddr, '--data-dir', server.dataDir]);
    assert.equal(r.code, 0, r.stderr);
  };
  const endpoints = (...ports: string[]): void => void mesh.writeConfig('endpoints.yaml', `services:\n  api: [${ports.map((p) => `{ address: 127.0.0.1, port: ${p} }`).join(', ')}]\n`);
  const aConfig = (extra: string): string =>
    mesh.writeConfig('a.yaml', `${extra}inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nendpointsFile: {{root}}/endpoints.yaml\n${GOSSIP}services:\n  - name: web\n    port: 1\n    upstreams: [{ service: api, port: ${upstream}, protocol: http }]\n`);

  before(async () => {
    app = await startHttpApp('api');
    server = await mesh.startServer();
    b = await mesh.startAgent('node-b', mesh.writeConfig('b.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\n${GOSSIP}services: [{ name: api, port: ${app.port}, protocol: http }]\n`), {
      join: await mesh.token(server),
    });
    endpoints(b.inbound.split(':')[1]!);
    upstream = await freePort();
    a = await mesh.startAgent('node-a', aConfig(''), { join: await mesh.token(server) });
  });

  after(async () => {
    fake?.close();
    app?.server.close();
    app?.server.closeAllConnections();
    await mesh.close();
  });

  it('an agent cut off from the server gets a new version from the agent it calls, verified, and applies it', async () => {
    await apply('dr.yaml', DR);
    await until('both agents hold version 1 from the server', async () => (await policyOf(a)).meshVersion === 1 && (await policyOf(b)).meshVersion === 1);
    // node-a restarts with its server address on a dead port: it runs on its cache and cannot hear of version 2.
    await a.proc.stop();
    a = await mesh.startAgent('node-a', aConfig(`server: "127.0.0.1:${await freePort()}"\n`), { stateDir: a.stateDir });
    assert.equal((await policyOf(a)).meshVersion, 1, 'node-a came up with its cached version');

    await apply('vs.yaml', VS_FAULT);
    await until('node-b holds version 2 from the server', async () => (await policyOf(b)).meshVersion === 2);
    await until('node-a pulls version 2 from node-b', async () => (await policyOf(a)).meshVersion === 2);
    const p = await policyOf(a);
    assert.equal(p.meshDigest, (await policyOf(b)).meshDigest);
    assert.equal(p.gossip?.lastPull?.version, 2);
    assert.match(p.gossip!.lastPull!.from, /spiffe:\/\/[^/]+\/ns\/default\/sa\/api/, 'pulled from the peer that proved the identity of api');
    assert.match(a.proc.stderr, /mesh policy version taken from a peer/);
    assert.doesNotMatch(a.proc.stderr, /connected to server/, 'node-a never reached the server after its restart');
    // Applied, not only held: the fault of version 2 answers through node-a's upstream.
    const r = await request(`http://127.0.0.1:${upstream}/gossip`);
    await r.body.text();
    assert.equal(r.statusCode, 418);
    const cached = JSON.parse(readFileSync(join(a.stateDir, 'policy.json'), 'utf8')) as { version: number };
    assert.equal(cached.version, 2, 'the pulled version is cached for the next start');
  });

  it('a peer with a valid identity offering a tampered version is refused, and the agent keeps its version', async () => {
    // A compromised node: it holds api's real workload key and certificate and speaks gossip, offering "version 3":
    // version 2's documents with one changed, under version 2's signature.
    const held = JSON.parse(readFileSync(join(b.stateDir, 'policy.json'), 'utf8')) as { version: number; digest: string; signature: string; signerCert: string; documents: PolicyDocumentSource[] };
    const documents = held.documents.map((d) => (d.kind === 'VirtualService' ? { ...d, source: d.source.replace('httpStatus: 418', 'httpStatus: 200') } : d));
    assert.notDeepEqual(documents, held.documents);
    const forged = { type: 'policy', version: 3, digest: policyDigest(documents), signature: held.signature, signerCert: held.signerCert, documents };
    let pulls = 0;
    fake = createServer(
      {
        key: readFileSync(join(b.stateDir, 'workloads', 'default.api.key')),
        cert: readFileSync(join(b.stateDir, 'workloads', 'default.api.crt')),
        ca: readFileSync(join(b.stateDir, 'roots.pem')),
        requestCert: true,
        rejectUnauthorized: true,
        ALPNProtocols: [GOSSIP_ALPN],
      },
      (socket: TLSSocket) => {
        let buf = '';
        socket.on('error', () => undefined);
        socket.on('data', (chunk: Buffer) => {
          buf += chunk.toString();
          for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
            const msg = JSON.parse(buf.slice(0, nl)) as { type: string };
            buf = buf.slice(nl + 1);
            if (msg.type === 'hello') socket.write(`${JSON.stringify({ type: 'hello', protocol: 1, policy: { version: 3, digest: forged.digest } })}\n`);
            else if (msg.type === 'pull') {
              pulls++;
              socket.write(`${JSON.stringify(forged)}\n`);
            } else if (msg.type === 'done') socket.end(`${JSON.stringify({ type: 'done' })}\n`);
          }
        });
      },
    );
    await new Promise<void>((r) => fake!.listen(0, '127.0.0.1', r));
    endpoints(String((fake.address() as { port: number }).port));

    await until('node-a pulls from the forging peer and refuses what it gets', async () => (await policyOf(a)).gossip?.refused === 1);
    const p = await policyOf(a);
    assert.equal(pulls, 1);
    assert.equal(p.meshVersion, 2, 'node-a keeps version 2');
    assert.equal(p.gossip?.lastRefusal?.version, 3);
    assert.match(p.gossip!.lastRefusal!.error, /MESH_ERR_POLICY_SIGNATURE: policy version 3: the signature does not match/);
    assert.match(a.proc.stderr, /policy version from a peer refused, keeping the one held/);
    const r = await request(`http://127.0.0.1:${upstream}/gossip`);
    await r.body.text();
    assert.notEqual(r.statusCode, 200, 'the tampered rule is not in force');
    // A refused version is never pulled again, however often the peer offers it.
    const exchanges = (await agentStatus(a)) as unknown as { policy: { gossip: { exchanges: number } } };
    await until('more rounds with the forging peer', async () => ((await agentStatus(a)) as unknown as typeof exchanges).policy.gossip.exchanges >= exchanges.policy.gossip.exchanges + 3);
    assert.equal(pulls, 1);
    assert.equal((await policyOf(a)).gossip?.refused, 1);
    const text = await runMeshAgent(['status', '--agent', a.admin, '--state-dir', a.stateDir]);
    assert.match(text.stdout, /^gossip: pulled version 2 from \S+ \(spiffe:\/\/\S+\/sa\/api\) .*; refused version 3 from .*MESH_ERR_POLICY_SIGNATURE/m);
  });

  it('a caller with a workload certificate (not an agent\'s node identity) cannot gossip', async () => {
    const dir = join(b.stateDir, 'workloads');
    const socket = connect({
      host: '127.0.0.1',
      port: Number(b.inbound.split(':')[1]),
      servername: 'api.default.mesh.local',
      key: readFileSync(join(dir, 'default.api.key')),
      cert: readFileSync(join(dir, 'default.api.crt')),
      ca: readFileSync(join(b.stateDir, 'roots.pem')),
      ALPNProtocols: [GOSSIP_ALPN],
      checkServerIdentity: () => undefined,
    });
    socket.on('error', () => undefined);
    await new Promise((r) => socket.once('secureConnect', r));
    assert.equal(socket.alpnProtocol, GOSSIP_ALPN);
    socket.write(`${JSON.stringify({ type: 'hello', protocol: 1 })}\n`);
    let answer = '';
    socket.on('data', (c: Buffer) => (answer += c.toString()));
    await new Promise((r) => socket.once('close', r));
    assert.equal(answer, '', 'closed without a word');
    await b.proc.waitFor(/policy gossip refused: the caller is not an agent of this trust domain.*sa\/api/);
  });
});
