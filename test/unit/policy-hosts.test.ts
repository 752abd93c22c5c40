// Unit tests for src/policy host names: every spelling of a mesh service normalizes to one {name, namespace}.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { formatServiceRef, normalizeHost, sameService, serviceRefKey } from '../../src/policy';

describe('normalizeHost', () => {
  test('short, namespaced, .svc, .svc.cluster.local and .mesh forms name the same service', () => {
    for (const host of ['reviews', 'reviews.default', 'reviews.default.svc', 'reviews.default.svc.cluster.local', 'reviews.default.mesh', 'Reviews.Default.SVC.cluster.local', 'reviews.default.svc.cluster.local.', 'reviews:9080', 'reviews.default:9080']) {
      assert.deepEqual(normalizeHost(host, 'default'), { name: 'reviews', namespace: 'default' }, host);
    }
  });

  test('a short name belongs to the namespace it is written in; a namespaced one does not', () => {
    assert.deepEqual(normalizeHost('reviews', 'shop'), { name: 'reviews', namespace: 'shop' });
    assert.deepEqual(normalizeHost('reviews.default', 'shop'), { name: 'reviews', namespace: 'default' });
    assert.deepEqual(normalizeHost('reviews.prod.svc.cluster.local', 'shop'), { name: 'reviews', namespace: 'prod' });
  });

  test('other dotted names are external hosts (namespace ""); declared two-label hosts too', () => {
    assert.deepEqual(normalizeHost('api.example.com', 'shop'), { name: 'api.example.com', namespace: '' });
    assert.deepEqual(normalizeHost('reviews.default.svc.other.local', 'shop'), { name: 'reviews.default.svc.other.local', namespace: '' });
    assert.deepEqual(normalizeHost('httpbin.org', 'shop'), { name: 'httpbin', namespace: 'org' });
    assert.deepEqual(normalizeHost('httpbin.org', 'shop', new Set(['httpbin.org'])), { name: 'httpbin.org', namespace: '' });
  });

  test('keys and display forms never confuse an external host with a mesh service', () => {
    const mesh = { name: 'api', namespace: 'example' };
    const external = { name: 'api.example', namespace: '' };
    assert.notEqual(serviceRefKey(mesh), serviceRefKey(external));
    assert.equal(formatServiceRef(mesh), 'api.example');
    assert.equal(formatServiceRef({ name: 'api.example.com', namespace: '' }), 'api.example.com');
    assert.ok(sameService(normalizeHost('api.example.svc', 'x'), mesh));
    assert.ok(!sameService(mesh, external));
  });
});
