// "host:port" addresses parsed once into a typed value.

/** A host and port, as bound or dialled. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** Parses "host:port", "[v6]:port" or ":port" (host = `defaultHost`); undefined when malformed. */
export function parseHostPort(text: string, defaultHost = '0.0.0.0'): HostPort | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s\[\]]*)):(\d{1,5})$/.exec(text.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: m[1] ?? (m[2] || defaultHost), port };
}

/** "host:port", bracketing IPv6 hosts. */
export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}
