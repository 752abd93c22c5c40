// Reads what tcpdump captured: pcap frames to TCP streams (Ethernet, IPv4), and TLS records with the ClientHello's SNI.

/** The bytes one side of a TCP connection sent, in sequence order. */
export interface TcpStream {
  readonly from: string;
  readonly to: string;
  readonly data: Buffer;
}

/** A TLS record header: content type (20 change_cipher_spec, 21 alert, 22 handshake, 23 application data) and length. */
export interface TlsRecord {
  readonly type: number;
  readonly length: number;
}

interface Segment {
  readonly seq: number;
  readonly syn: boolean;
  readonly payload: Buffer;
}

/** Splits a pcap file (tcpdump -w, Ethernet link type) into TCP/IPv4 streams, one per direction of each connection. */
export function tcpStreams(pcap: Buffer): TcpStream[] {
  if (pcap.length < 24) throw new Error(`not a pcap file: ${pcap.length} bytes`);
  const magic = pcap.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && pcap.readUInt32BE(0) !== 0xa1b2c3d4 && pcap.readUInt32BE(0) !== 0xa1b23c4d) throw new Error(`not a pcap file: magic ${magic.toString(16)}`);
  const u32 = (at: number): number => (le ? pcap.readUInt32LE(at) : pcap.readUInt32BE(at));
  if (u32(20) !== 1) throw new Error(`pcap link type ${u32(20)}, expected 1 (Ethernet)`);
  const flows = new Map<string, Segment[]>();
  for (let at = 24; at + 16 <= pcap.length; ) {
    const caplen = u32(at + 8);
    const frame = pcap.subarray(at + 16, at + 16 + caplen);
    at += 16 + caplen;
    if (frame.length < 14 || frame.readUInt16BE(12) !== 0x0800) continue;
    const ipHeader = frame.subarray(14);
    const ihl = (ipHeader[0]! & 0x0f) * 4;
    if (ipHeader[9] !== 6) continue;
    const total = ipHeader.readUInt16BE(2);
    const src = ipHeader.subarray(12, 16).join('.');
    const dst = ipHeader.subarray(16, 20).join('.');
    const tcp = ipHeader.subarray(ihl, total);
    const dataOffset = (tcp[12]! >> 4) * 4;
    const key = `${src}:${tcp.readUInt16BE(0)}>${dst}:${tcp.readUInt16BE(2)}`;
    const list = flows.get(key) ?? [];
    list.push({ seq: tcp.readUInt32BE(4), syn: (tcp[13]! & 0x02) !== 0, payload: Buffer.from(tcp.subarray(dataOffset)) });
    flows.set(key, list);
  }
  return [...flows].map(([key, segments]) => {
    const [from, to] = key.split('>') as [string, string];
    return { from, to, data: reassemble(segments) };
  });
}

/** Places each payload at its sequence offset (retransmissions overwrite the same bytes). */
function reassemble(segments: Segment[]): Buffer {
  const syn = segments.find((s) => s.syn);
  const withData = segments.filter((s) => s.payload.length > 0);
  if (withData.length === 0) return Buffer.alloc(0);
  // Sequence numbers wrap at 2^32: offsets are taken modulo 2^32 from the first data byte.
  const first = syn ? (syn.seq + 1) >>> 0 : Math.min(...withData.map((s) => s.seq));
  const offset = (s: Segment): number => (s.seq - first + 2 ** 32) % 2 ** 32;
  const size = Math.max(...withData.map((s) => offset(s) + s.payload.length));
  const out = Buffer.alloc(size);
  for (const s of withData) s.payload.copy(out, offset(s));
  return out;
}

/** Walks a stream as TLS records; `rest` is what does not parse as a whole record (empty for a clean TLS stream). */
export function tlsRecords(data: Buffer): { records: TlsRecord[]; rest: Buffer } {
  const records: TlsRecord[] = [];
  let at = 0;
  while (at + 5 <= data.length) {
    const type = data[at]!;
    const length = data.readUInt16BE(at + 3);
    if (type < 20 || type > 23 || data[at + 1] !== 3 || at + 5 + length > data.length) break;
    records.push({ type, length });
    at += 5 + length;
  }
  return { records, rest: data.subarray(at) };
}

/** The server name of a stream that starts with a TLS ClientHello, or undefined when it does not. */
export function clientHelloServerName(data: Buffer): string | undefined {
  if (data.length < 9 || data[0] !== 22 || data[5] !== 1) return undefined;
  const hello = data.subarray(9, 5 + data.readUInt16BE(3));
  let at = 2 + 32; // client_version, random
  at += 1 + hello[at]!; // session id
  at += 2 + hello.readUInt16BE(at); // cipher suites
  at += 1 + hello[at]!; // compression methods
  const end = at + 2 + hello.readUInt16BE(at);
  for (at += 2; at + 4 <= end; ) {
    const type = hello.readUInt16BE(at);
    const len = hello.readUInt16BE(at + 2);
    if (type === 0) {
      // server_name: list length (2), name type (1, 0 = host_name), name length (2), name
      const nameLength = hello.readUInt16BE(at + 4 + 3);
      return hello.subarray(at + 4 + 5, at + 4 + 5 + nameLength).toString('latin1');
    }
    at += 4 + len;
  }
  return undefined;
}
