// Certificate rotation with a 10 s lifetime: renewal at half life, open connections survive, new ones use the new cert.

import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { startHttpApp } from '../helpers/apps';
import { RawHttpConnection } from '../helpers/http-raw';
import { TestMesh } from '../helpers/mesh';

const hashOf = (xfcc: string): string => /Hash=([0-9a-f]{64})/.exec(xfcc)![1]!;
const certHash = (file: string): string => createHash('sha256').update(new X509Certificate(readFileSync(file)).raw).digest('hex');

describe('workload certificate rotation', () => {
  const mesh = new TestMesh();
  let api: Awaited<ReturnType<typeof startHttpApp>> | undefined;
  after(async () => {
    api?.server.close();
    await mesh.close();
  });

  it('renews at half life without dropping a long-running connection; new connections present the new certificate', async () => {
    const server = await mesh.startServer(['--workload-cert-ttl', '10s']);
    api = await startHttpApp('api');
    // tcp upstream: each downstream connection is its own mTLS connection, so "long-running" means the mTLS one.
    const { a, upstream } = await mesh.startPair(server, api.port, 'tcp');
    const certFile = join(a.stateDir, 'workloads', 'default.web.crt');
    const first = new X509Certificate(readFileSync(certFile));
    const lifetime = Date.parse(first.validTo) - Date.parse(first.validFrom);
    assert.equal(lifetime, 10_000, 'the configured lifetime');

    const long = new RawHttpConnection(upstream);
    const r1 = await long.get('/before');
    assert.equal(r1.status, 200);
    const oldHash = hashOf((JSON.parse(r1.body) as { headers: Record<string, string> }).headers['x-forwarded-client-cert']!);
    assert.equal(oldHash, certHash(certFile));

    // The renewal is an event the agent logs: wait for a second certificate for web, not for a fixed time.
    const m = await a.proc.waitFor(/certificate issued .*sa\/web serial=(\w+)[\s\S]*certificate issued .*sa\/web serial=(\w+)/, 15_000);
    assert.notEqual(m[1], m[2]);
    const renewed = new X509Certificate(readFileSync(certFile));
    assert.ok(Date.parse(renewed.validFrom) - Date.parse(first.validFrom) <= 6_000, 'renewed around half life (5 s), not at expiry');
    assert.ok(Date.parse(renewed.validFrom) - Date.parse(first.validFrom) >= 4_000, 'not renewed before half life');

    const r2 = await long.get('/after-on-old-connection');
    assert.equal(r2.status, 200, 'the connection opened before renewal still works');
    assert.equal(hashOf((JSON.parse(r2.body) as { headers: Record<string, string> }).headers['x-forwarded-client-cert']!), oldHash);
    assert.equal(long.closed, false);
    long.close();

    const fresh = new RawHttpConnection(upstream);
    const r3 = await fresh.get('/new-connection');
    const newHash = hashOf((JSON.parse(r3.body) as { headers: Record<string, string> }).headers['x-forwarded-client-cert']!);
    assert.notEqual(newHash, oldHash);
    assert.equal(newHash, certHash(certFile), 'a new connection presents the renewed certificate');
    fresh.close();
  });
});
