// Unit tests for the channel's policy messages (protocol 2): what older agents send still parses, and bad fields are named.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isMeshError } from '../../src/errors';
import { parseAgentMessage, parseServerMessage } from '../../src/protocol';

const DIGEST = `sha256:${'ab'.repeat(32)}`;

function refused(parse: () => unknown, message: RegExp): void {
  assert.throws(parse, (err: unknown) => isMeshError(err, 'MESH_ERR_BAD_REQUEST') && message.test(err.message));
}

describe('channel messages, protocol 2', () => {
  test('a hello from a protocol 1 agent parses, with no policy, no labels and no upstreams', () => {
    const hello = parseAgentMessage(JSON.stringify({ type: 'hello', nodeName: 'n', address: '', services: [{ name: 'web', namespace: 'default' }], version: '0.1.0' }));
    assert.deepEqual(hello, { type: 'hello', nodeName: 'n', address: '', services: [{ name: 'web', namespace: 'default', labels: {} }], upstreams: [], version: '0.1.0', protocol: 1, policyOverride: false });
  });

  test('a protocol 2 hello carries labels, upstreams and the version held', () => {
    const hello = parseAgentMessage(
      JSON.stringify({
        type: 'hello',
        nodeName: 'n',
        services: [{ name: 'web', namespace: 'default', labels: { app: 'web', version: 'v2' } }],
        upstreams: [{ name: 'api', namespace: 'shop' }],
        protocol: 2,
        policy: { version: 7, digest: DIGEST },
        policyOverride: true,
      }),
    );
    assert.equal(hello.type, 'hello');
    if (hello.type !== 'hello') return;
    assert.deepEqual(hello.services[0]!.labels, { app: 'web', version: 'v2' });
    assert.deepEqual(hello.upstreams, [{ name: 'api', namespace: 'shop' }]);
    assert.deepEqual(hello.policy, { version: 7, digest: DIGEST });
    assert.equal(hello.policyOverride, true);
  });

  test('bad fields of hello, policy-ack and policy-nack are refused by name', () => {
    refused(() => parseAgentMessage(JSON.stringify({ type: 'hello', nodeName: 'n', services: [], policy: { version: 0, digest: DIGEST } })), /hello\.policy\.version must be an integer of at least 1/);
    refused(() => parseAgentMessage(JSON.stringify({ type: 'hello', nodeName: 'n', services: [{ name: 'web', namespace: 'default', labels: { v: 2 } }] })), /hello\.services\[0\]\.labels must map label names to strings/);
    refused(() => parseAgentMessage(JSON.stringify({ type: 'policy-ack', version: 3, digest: 'md5:abc' })), /policy-ack\.digest must look like sha256:<64 hex digits>/);
    refused(() => parseAgentMessage(JSON.stringify({ type: 'policy-nack', version: 3, code: 'X' })), /policy-nack\.message must be a non-empty string/);
    assert.deepEqual(parseAgentMessage(JSON.stringify({ type: 'policy-nack', version: 3, code: 'MESH_ERR_POLICY_SIGNATURE', message: 'no', holding: { version: 2, digest: DIGEST } })), {
      type: 'policy-nack',
      version: 3,
      code: 'MESH_ERR_POLICY_SIGNATURE',
      message: 'no',
      holding: { version: 2, digest: DIGEST },
    });
  });

  test('a policy message is checked field by field before the agent looks at it', () => {
    const good = { type: 'policy', version: 2, digest: DIGEST, signature: 'c2ln', signerCert: 'PEM', base: { version: 1, digest: DIGEST }, upserts: [{ kind: 'VirtualService', namespace: 'default', name: 'r', source: 'x: 1' }], removals: [] };
    const msg = parseServerMessage(JSON.stringify(good));
    assert.equal(msg.type, 'policy');
    refused(() => parseServerMessage(JSON.stringify({ ...good, upserts: undefined })), /policy\.upserts must be a list/);
    refused(() => parseServerMessage(JSON.stringify({ ...good, upserts: [{ kind: 'VirtualService', namespace: 'default', name: 'r' }] })), /policy\.upserts\[0\]\.source must be a non-empty string/);
    refused(() => parseServerMessage(JSON.stringify({ ...good, removals: [{ kind: 'VirtualService', name: 'r' }] })), /policy\.removals\[0\]\.namespace must be a non-empty string/);
    refused(() => parseServerMessage(JSON.stringify({ ...good, version: 1.5 })), /policy\.version must be an integer of at least 1/);
    assert.equal(parseServerMessage(JSON.stringify({ type: 'welcome', trustDomain: 'mesh.local', roots: [], agentId: 'a' })).type, 'welcome', 'a protocol 1 welcome parses');
  });
});
