// A small DNS responder (UDP): A records for mesh service names (*.service.consul, *.mesh) with their virtual IPs; REFUSED for other names.

import { createSocket, type Socket } from 'node:dgram';
import { formatHostPort, type HostPort } from '../config';
import { MeshError } from '../errors';
import type { Logger } from '../telemetry';

/** What the responder knows of a name: not in its zones (refused), in them but unknown (NXDOMAIN), or a virtual IP. */
export type NameAnswer = { readonly zone: false } | { readonly zone: true; readonly ip: string | undefined };

const TYPE_A = 1;
const TYPE_ANY = 255;
const CLASS_IN = 1;
const RCODE = { noError: 0, formErr: 1, nxDomain: 3, notImp: 4, refused: 5 } as const;
/** Seconds resolvers may keep an answer: virtual IPs change only when the service set does. */
const TTL_SECONDS = 30;

/**
 * The answer to one DNS query message, or undefined for bytes not worth an answer (shorter than a header, or a
 * response). A query it cannot read gets FORMERR; an opcode other than QUERY gets NOTIMP.
 */
export function answerQuery(query: Buffer, lookup: (name: string) => NameAnswer): Buffer | undefined {
  if (query.length < 12 || (query[2]! & 0x80) !== 0) return undefined;
  const opcode = (query[2]! >> 3) & 0x0f;
  const reply = (rcode: number, question: Buffer, answer?: Buffer, authoritative = false): Buffer => {
    const header = Buffer.alloc(12);
    query.copy(header, 0, 0, 2);
    header[2] = 0x80 | (opcode << 3) | (authoritative ? 0x04 : 0) | (query[2]! & 0x01);
    header[3] = rcode;
    header.writeUInt16BE(question.length > 0 ? 1 : 0, 4);
    header.writeUInt16BE(answer ? 1 : 0, 6);
    return Buffer.concat([header, question, answer ?? Buffer.alloc(0)]);
  };
  if (opcode !== 0) return reply(RCODE.notImp, Buffer.alloc(0));
  if (query.readUInt16BE(4) !== 1) return reply(RCODE.formErr, Buffer.alloc(0));
  const labels: string[] = [];
  let at = 12;
  for (;;) {
    const len = query[at];
    if (len === undefined || len > 63 || at + 1 + len > query.length) return reply(RCODE.formErr, Buffer.alloc(0));
    at += 1 + len;
    if (len === 0) break;
    labels.push(query.subarray(at - len, at).toString('latin1').toLowerCase());
  }
  if (at + 4 > query.length || at - 12 > 255) return reply(RCODE.formErr, Buffer.alloc(0));
  const qtype = query.readUInt16BE(at);
  const qclass = query.readUInt16BE(at + 2);
  const question = query.subarray(12, at + 4);
  const found = lookup(labels.join('.'));
  if (!found.zone) return reply(RCODE.refused, question);
  if (found.ip === undefined) return reply(RCODE.nxDomain, question, undefined, true);
  if ((qtype !== TYPE_A && qtype !== TYPE_ANY) || qclass !== CLASS_IN) return reply(RCODE.noError, question, undefined, true);
  const answer = Buffer.alloc(16);
  answer.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
  answer.writeUInt16BE(TYPE_A, 2);
  answer.writeUInt16BE(CLASS_IN, 4);
  answer.writeUInt32BE(TTL_SECONDS, 6);
  answer.writeUInt16BE(4, 10);
  ip4Bytes(found.ip).copy(answer, 12);
  return reply(RCODE.noError, question, answer, true);
}

function ip4Bytes(ip: string): Buffer {
  return Buffer.from(ip.split('.').map(Number));
}

/**
 * The zones answered: `<name>.service.consul` and `<name>.service.<dc>.consul` (namespace default, else the
 * only namespace with that name), `<name>.mesh` (namespace default) and `<name>.<namespace>.mesh`.
 * `ips` maps "name.namespace" to the virtual IP.
 */
export function meshNameLookup(ips: ReadonlyMap<string, string>): (name: string) => NameAnswer {
  const byName = (name: string): string | undefined => {
    const exact = ips.get(`${name}.default`);
    if (exact) return exact;
    const others = [...ips].filter(([k]) => k.startsWith(`${name}.`));
    return others.length === 1 ? others[0]![1] : undefined;
  };
  return (fqdn) => {
    const l = fqdn.split('.');
    if (l.at(-1) === 'consul' && l.length >= 3 && l[1] === 'service' && l.length <= 4) return { zone: true, ip: byName(l[0]!) };
    if (l.at(-1) === 'consul') return { zone: true, ip: undefined };
    if (l.at(-1) === 'mesh' && l.length === 2) return { zone: true, ip: ips.get(`${l[0]}.default`) };
    if (l.at(-1) === 'mesh' && l.length === 3) return { zone: true, ip: ips.get(`${l[0]}.${l[1]}`) };
    if (l.at(-1) === 'mesh') return { zone: true, ip: undefined };
    return { zone: false };
  };
}

/** The responder on one UDP address; `lookup` is asked on every query, so answers follow the service set. */
export class DnsResponder {
  private socket?: Socket;
  /** Queries answered, by outcome. */
  readonly stats = { answered: 0, refused: 0, malformed: 0 };

  constructor(
    private readonly lookup: (name: string) => NameAnswer,
    private readonly log: Logger,
  ) {}

  /** @throws MeshError MESH_ERR_LISTEN when the address cannot be bound */
  listen(at: HostPort): Promise<HostPort> {
    const socket = (this.socket = createSocket('udp4'));
    socket.on('message', (msg, rinfo) => {
      const out = answerQuery(msg, this.lookup);
      if (!out) return void this.stats.malformed++;
      const rcode = out[3]! & 0x0f;
      if (rcode === RCODE.refused) this.stats.refused++;
      else if (rcode === RCODE.formErr || rcode === RCODE.notImp) this.stats.malformed++;
      else this.stats.answered++;
      socket.send(out, rinfo.port, rinfo.address);
    });
    return new Promise((resolve, reject) => {
      socket.once('error', (err: NodeJS.ErrnoException) => reject(new MeshError('MESH_ERR_LISTEN', `cannot listen for DNS on ${formatHostPort(at)}: ${err.code ?? err.message}`, { cause: err })));
      socket.bind(at.port, at.host, () => {
        socket.removeAllListeners('error');
        socket.on('error', (err) => this.log.warn('dns socket error', { error: err.message }));
        const a = socket.address();
        this.log.info('dns listening', { listen: formatHostPort({ host: a.address, port: a.port }) });
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  close(): Promise<void> {
    const s = this.socket;
    this.socket = undefined;
    return new Promise((resolve) => (s ? s.close(() => resolve()) : resolve()));
  }
}
