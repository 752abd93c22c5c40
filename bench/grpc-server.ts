// A gRPC unary server for the benchmark: h2c (prior knowledge), answers every call with one small message and grpc-status 0.
// Run: node dist/bench/grpc-server.js PORT [DATAFILE]  -- prints "listening PORT" when ready; with DATAFILE, first writes
// there a request body (one length-prefixed message) for `h2load -d`.

import { createServer, type ServerHttp2Stream } from 'node:http2';
import { writeFileSync } from 'node:fs';
import { frame } from '../test/helpers/grpc';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`usage: grpc-server.js PORT [DATAFILE]; got port "${process.argv[2] ?? ''}"`);
  process.exit(2);
}
const dataFile = process.argv[3];
if (dataFile) writeFileSync(dataFile, frame('x'.repeat(64)));

const reply = frame('y'.repeat(64));
const HEADERS = { ':status': 200, 'content-type': 'application/grpc' };
const TRAILERS = { 'grpc-status': '0' };

/** Reads the request to its end (a unary call's one message), then answers headers, one message, trailers. */
function answer(stream: ServerHttp2Stream): void {
  stream.on('error', () => {});
  stream.on('data', () => {});
  stream.on('end', () => {
    if (stream.destroyed) return;
    stream.respond(HEADERS, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers(TRAILERS));
    stream.end(reply);
  });
}

const server = createServer({ settings: { maxConcurrentStreams: 1000 } });
server.on('stream', answer);
server.on('sessionError', () => {});
server.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
process.on('SIGTERM', () => process.exit(0));
