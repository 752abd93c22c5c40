// VirtualService tcp[] routes and match.sourceLabels through real agents: the caller's labels (from the agent's
// service config) choose the subset, for TCP connections and HTTP requests alike.

import assert from 'node:assert/strict';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createTcpServer, type Server as NetServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { tcpExchange } from '../helpers/apps';
import { TestMesh } from '../helpers/mesh';
import { freePort } from '../helpers/processes';

const POLICY = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: db }
spec:
  host: db
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: db }
spec:
  hosts: [db]
  tcp:
    - match: [{ sourceLabels: { track: canary } }]
      route: [{ destination: { host: db, subset: v2 } }]
    - route:
        - { destination: { host: db, subset: v1 }, weight: 100 }
        - { destination: { host: db, subset: v2 }, weight: 0 }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: api }
spec:
  host: api
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: api }
spec:
  hosts: [api]
  http:
    - match: [{ sourceLabels: { app: web, track: canary } }]
      route: [{ destination: { host: api, subset: v2 } }]
    - route: [{ destination: { host: api, subset: v1 } }]
`;

describe('tcp routes and source labels through the mesh', () => {
  const mesh = new TestMesh();
  const apps: (Server | NetServer)[] = [];
  const ports: Record<string, number> = {};

  /** A TCP app that says its version and closes; an HTTP app that answers its version. */
  async function startApps(version: string): Promise<{ tcp: number; http: number }> {
    const tcp = createTcpServer((s) => s.end(version));
    const http = createHttpServer((_req, res) => res.end(version));
    apps.push(tcp, http);
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    return { tcp: (tcp.address() as { port: number }).port, http: (http.address() as { port: number }).port };
  }

  before(async () => {
    const server = await mesh.startServer();
    const nodes: Record<string, string> = {};
    for (const v of ['v1', 'v2']) {
      const app = await startApps(v);
      const b = await mesh.startAgent(
        `node-${v}`,
        mesh.writeConfig(`${v}.yaml`, `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nservices:\n  - { name: db, port: ${app.tcp}, protocol: tcp }\n  - { name: api, port: ${app.http}, protocol: http }\n`),
        { join: await mesh.token(server) },
      );
      nodes[v] = b.inbound.split(':')[1]!;
    }
    const eps = (svc: string): string => `  ${svc}:\n` + ['v1', 'v2'].map((v) => `    - { address: 127.0.0.1, port: ${nodes[v]}, labels: { version: ${v} } }\n`).join('');
    mesh.writeConfig('endpoints.yaml', `services:\n${eps('db')}${eps('api')}`);
    mesh.writeConfig('policy.yaml', POLICY);
    for (const k of ['web-db', 'web-api', 'batch-db', 'batch-api']) ports[k] = await freePort();
    const svc = (name: string, labels: string): string =>
      `  - name: ${name}\n    port: 1\n    labels: ${labels}\n    upstreams:\n      - { service: db, port: ${ports[`${name}-db`]}, protocol: tcp }\n      - { service: api, port: ${ports[`${name}-api`]}, protocol: http }\n`;
    await mesh.startAgent(
      'node-a',
      mesh.writeConfig('a.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nendpointsFile: {{root}}/endpoints.yaml\npolicyFile: {{root}}/policy.yaml\nservices:\n${svc('web', '{ track: canary }')}${svc('batch', '{ track: stable }')}`),
      { join: await mesh.token(server) },
    );
  });

  after(async () => {
    for (const a of apps) a.close();
    await mesh.close();
  });

  it('a tcp[] rule matching the caller\'s labels sends its connections to subset v2; others take the weighted default', async () => {
    for (let i = 0; i < 10; i++) {
      assert.equal((await tcpExchange(ports['web-db']!, '', { timeoutMs: 5000 })).received.toString(), 'v2');
      assert.equal((await tcpExchange(ports['batch-db']!, '', { timeoutMs: 5000 })).received.toString(), 'v1', 'weight 0 is never picked');
    }
  });

  it('an http[] match on sourceLabels (app from the service name, track from labels) picks the subset', async () => {
    for (let i = 0; i < 5; i++) {
      assert.equal(await (await request(`http://127.0.0.1:${ports['web-api']}/`)).body.text(), 'v2');
      assert.equal(await (await request(`http://127.0.0.1:${ports['batch-api']}/`)).body.text(), 'v1');
    }
  });
});
