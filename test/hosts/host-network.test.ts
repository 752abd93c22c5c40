// The several-host harness itself: hosts reach each other only over the bridge, and nothing outlives a run, crashed or not.

import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { HostNetwork, hostNetworkUnavailable } from './host-network';

const namespaces = (): string[] =>
  execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter(Boolean);

describe('host network harness', { skip: hostNetworkUnavailable(['curl']) }, () => {
  const made: HostNetwork[] = [];
  after(async () => {
    for (const n of made) await n.destroy();
  });

  it('hosts reach each other by their 10.x addresses; destroy() removes the namespaces and kills their processes', async () => {
    const net = await HostNetwork.create('harness', '10.78.0');
    made.push(net);
    const a = await net.addHost('a', 1);
    const b = await net.addHost('b', 2);
    assert.equal(b.address, '10.78.0.2');
    await assert.rejects(net.addHost('c', 2), /address 10\.78\.0\.2 is taken/);
    const app = net.meshAgent(b, 'app', ['sample-service', '--name', 'app', '--host', b.address, '--port', '8080']);
    await app.waitFor(/listening on 10\.78\.0\.2:8080/);
    const r = await net.run(a, ['curl', '-sS', '--max-time', '10', `http://${b.address}:8080/x`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { service: string }).service, 'app');
    // The machine's own namespace does not have the hosts' addresses or routes to them.
    assert.doesNotMatch(execFileSync('ip', ['-4', 'addr'], { encoding: 'utf8' }), /10\.78\.0\./);

    const pid = app.child.pid!;
    await net.destroy();
    assert.deepEqual(namespaces().filter((n) => n.startsWith(net.prefix)), [], 'no namespace of the run is left');
    assert.equal(existsSync(`/proc/${pid}`), false, 'the process inside the host is gone');
  });

  it('a new run of the same tag removes what a crashed run left: namespaces and the processes inside them', async () => {
    // A crashed run: its pid no longer exists, its namespace and a process in it do.
    const dead = spawnSync('true').pid;
    const leftover = `mhtest-crash-${dead}-a`;
    execFileSync('ip', ['netns', 'add', leftover]);
    const orphan = spawn('ip', ['netns', 'exec', leftover, 'sleep', '600'], { stdio: 'ignore', detached: true });
    orphan.unref();
    const exited = new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve('still running after 10 s'), 10_000);
      orphan.once('exit', (_code, signal) => {
        clearTimeout(timer);
        resolve(`killed by ${signal}`);
      });
    });
    // A live run of the same tag (this process) must be left alone.
    const live = await HostNetwork.create('crash', '10.79.0');
    made.push(live);
    assert.equal(await exited, 'killed by SIGKILL', 'the process left inside the crashed run\'s host');
    assert.ok(!namespaces().includes(leftover), 'the crashed run\'s namespace is gone');
    assert.ok(namespaces().includes(`${live.prefix}sw`), 'this run\'s namespace is there');
    assert.deepEqual(await HostNetwork.removeLeftovers('crash'), [], 'a live run is not a leftover');
    await live.destroy();
  });
});
