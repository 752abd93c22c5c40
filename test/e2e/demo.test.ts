// `mesh-agent demo` through the real bin: a curl line within 20 s, a working path, and nothing left after Ctrl-C.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { request } from 'undici';
import { Proc, BIN } from '../helpers/processes';

/** Pids of live processes whose command line mentions `needle`. */
function processesMentioning(needle: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(needle);
      } catch {
        return false;
      }
    })
    .map(Number);
}

describe('mesh-agent demo', () => {
  let demo: Proc | undefined;
  after(async () => {
    // Ctrl-C first, so the demo stops its children even when an assertion failed; SIGKILL only if it hangs.
    if (demo?.running) {
      demo.child.kill('SIGINT');
      const t = setTimeout(() => demo?.child.kill('SIGKILL'), 10_000);
      await demo.exited;
      clearTimeout(t);
    }
  });

  it('prints a curl command within 20 s that goes through the mesh, and Ctrl-C stops everything', async () => {
    // Below the kernel's ephemeral range (32768+), where the other tests' port-0 listeners land.
    const base = 21000 + Math.floor(Math.random() * 20) * 300;
    demo = new Proc('demo', spawn(BIN, ['demo', '--base-port', String(base)], { stdio: ['ignore', 'pipe', 'pipe'] }));
    const dir = (await demo.waitFor(/state and logs in (\S+)/))[1]!;
    const url = (await demo.waitFor(/curl -s (http:\/\/127\.0\.0\.1:\d+\/\S*)/, 20_000))[1]!;
    const res = await request(url, { headersTimeout: 5000 });
    const body = (await res.body.json()) as { service: string; upstream: { meshCaller: string; body: { service: string; xfcc: string } } };
    assert.equal(body.service, 'web');
    assert.equal(body.upstream.body.service, 'api');
    assert.equal(body.upstream.meshCaller, 'spiffe://mesh.local/ns/default/sa/web');
    assert.match(body.upstream.body.xfcc, /^By=spiffe:\/\/mesh\.local\/ns\/default\/sa\/api;Hash=/);
    assert.equal(processesMentioning(dir).length, 3, 'the server and two agents name the demo dir in their arguments');

    demo.child.kill('SIGINT');
    assert.equal(await demo.exited, 0);
    assert.match(demo.stdout, /stopped 5 processes/);
    assert.deepEqual(processesMentioning(dir), [], 'no mesh-agent process of the demo is left running');
    await assert.rejects(request(url, { headersTimeout: 2000 }), /ECONNREFUSED/, 'the sample apps are gone too');
    assert.equal(existsSync(dir), false, 'the temporary state dir is removed');
  });
});
