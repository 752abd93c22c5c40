// Unit tests for classifyFirstBytes: how the inbound port tells TLS, h2c, HTTP/1 and other TCP apart on one port.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { classifyFirstBytes } from '../../src/proxy/first-bytes';

const b = (s: string | number[]): Buffer => (typeof s === 'string' ? Buffer.from(s, 'latin1') : Buffer.from(s));

describe('classifyFirstBytes', () => {
  test('a TLS handshake record (0x16 0x03) is TLS; 0x16 followed by anything else is TCP', () => {
    assert.equal(classifyFirstBytes(b([0x16, 0x03, 0x01, 0x02, 0x00])), 'tls');
    assert.equal(classifyFirstBytes(b([0x16, 0x03])), 'tls');
    assert.equal(classifyFirstBytes(b([0x16])), undefined, 'one byte cannot tell');
    assert.equal(classifyFirstBytes(b([0x16, 0x04])), 'tcp');
  });

  test('the HTTP/2 preface is h2c, once whole; a prefix of it waits', () => {
    const preface = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';
    assert.equal(classifyFirstBytes(b(`${preface}\x00\x00\x12\x04`)), 'h2c');
    assert.equal(classifyFirstBytes(b(preface)), 'h2c');
    for (const n of [1, 3, 10, 23]) assert.equal(classifyFirstBytes(b(preface.slice(0, n))), undefined, `${n} bytes`);
    assert.equal(classifyFirstBytes(b('PRI * HTTP/1.1\r\n')), 'http1', 'not the preface: an ordinary request line');
  });

  test('a complete HTTP/1 request line is HTTP/1; part of one waits', () => {
    assert.equal(classifyFirstBytes(b('GET / HTTP/1.1\r\nHost: api\r\n\r\n')), 'http1');
    assert.equal(classifyFirstBytes(b('POST /x?y=1 HTTP/1.0\n')), 'http1');
    assert.equal(classifyFirstBytes(b('M-SEARCH * HTTP/1.1\r\n')), 'http1');
    for (const part of ['G', 'GET', 'GET ', 'GET /index.html HTTP/1.']) assert.equal(classifyFirstBytes(b(part)), undefined, part);
  });

  test('anything else is TCP: other protocols, text that is not a request line, binary', () => {
    for (const s of ['SET key value\r\n', 'hello', 'ping\n', 'GET / HTTP/2.0\r\n', 'GET /a b HTTP/1.1\r\n', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ']) {
      assert.equal(classifyFirstBytes(b(s)), 'tcp', JSON.stringify(s));
    }
    assert.equal(classifyFirstBytes(b([0x00, 0x01, 0x02])), 'tcp');
    assert.equal(classifyFirstBytes(b(`GET /${'a'.repeat(9000)}`)), 'tcp', 'no line end within 8 KiB');
    assert.equal(classifyFirstBytes(Buffer.alloc(0)), undefined);
  });
});
