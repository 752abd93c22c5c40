// HA mode's settings and its key-encryption key: what is accepted, what is refused and how, and sealing secrets.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { isMeshError } from '../../src/errors';
import { loadServerConfig } from '../../src/server';
import { open, readKeyEncryptionKey, seal } from '../../src/server/ha/key-envelope';
import { tempDir } from '../helpers/processes';

const { dir, cleanup } = tempDir('mesh-ha-config-');
after(cleanup);

function keyFile(name: string, text: string, mode = 0o600): string {
  const file = join(dir, name);
  writeFileSync(file, text, { mode });
  return file;
}

function fails(fn: () => unknown, code: string, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isMeshError(err), String(err));
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  });
}

describe('HA key-encryption key', () => {
  test('seals a secret with AES-256-GCM; only the same key and aad open it', () => {
    const key = readKeyEncryptionKey(keyFile('good.key', `${randomBytes(32).toString('hex')}\n`));
    const sealed = seal(key, '-----BEGIN PRIVATE KEY-----\nabc', 'sha256:ff');
    assert.equal(sealed.alg, 'aes-256-gcm');
    assert.doesNotMatch(JSON.stringify(sealed), /PRIVATE KEY/);
    assert.equal(open(key, sealed, 'sha256:ff', 'CA key'), '-----BEGIN PRIVATE KEY-----\nabc');
    fails(() => open(randomBytes(32), sealed, 'sha256:ff', 'CA key'), 'MESH_ERR_HA_KEY', /not the one that sealed it/);
    fails(() => open(key, sealed, 'sha256:00', 'CA key'), 'MESH_ERR_HA_KEY', /CA key/);
  });

  test('refuses a key file others can read, one that is not 64 hex characters, or a missing one', () => {
    fails(() => readKeyEncryptionKey(keyFile('open.key', randomBytes(32).toString('hex'), 0o644)), 'MESH_ERR_HA_KEY', /mode 0644; it must be readable by its owner only/);
    fails(() => readKeyEncryptionKey(keyFile('short.key', 'abcd')), 'MESH_ERR_HA_KEY', /64 hex characters .*got 4/);
    fails(() => readKeyEncryptionKey(join(dir, 'none.key')), 'MESH_ERR_HA_KEY', /ENOENT/);
  });
});

describe('HA server settings', () => {
  test('--ha consul with a key file; the rest has defaults', () => {
    const c = loadServerConfig({ flags: { ha: 'consul', haKeyFile: 'ha.key', advertise: '10.0.0.5:15010', haConsul: '10.0.0.2:8500' }, env: {} });
    assert.equal(c.ha?.mode, 'consul');
    assert.equal(c.ha?.keyFile, join(process.cwd(), 'ha.key'));
    assert.equal(c.ha?.prefix, 'mesh-agent/');
    assert.equal(c.ha?.replicaName, '10.0.0.5-15010');
    assert.equal(c.ha?.adminAdvertise, 'http://127.0.0.1:15014');
    assert.deepEqual([c.ha?.sessionTtlMs, c.ha?.lockDelayMs], [15_000, 5000]);
    assert.equal(c.ha?.consul.address, '10.0.0.2:8500');
    assert.equal(loadServerConfig({ flags: {}, env: {} }).ha, undefined, 'single-server mode by default');
  });

  test('reports every problem: an unknown mode, no key file, a bad prefix, a lock delay past 60s', () => {
    fails(
      () => loadServerConfig({ flags: { ha: 'etcd', haPrefix: '/abs/../x', haLockDelay: '2m' }, env: {} }),
      'MESH_ERR_CONFIG',
      /ha\.mode[\s\S]*ha\.prefix[\s\S]*ha\.keyFile[\s\S]*ha\.lockDelay/,
    );
    fails(() => loadServerConfig({ flags: { haPrefix: 'x/' }, env: {} }), 'MESH_ERR_CONFIG', /ha\.mode.*is required/);
  });
});
