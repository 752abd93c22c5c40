// The catalogue of mesh-agent's typed errors: one stable MESH_ERR_* code each (docs/errors.md lists them).

/** Every error code mesh-agent raises, with what it means and whether retrying can help. */
export const ERROR_CATALOGUE = {
  MESH_ERR_CONFIG: { retryable: false, text: 'A configuration file, flag or environment variable is invalid; the message lists every problem with its field path.' },
  MESH_ERR_USAGE: { retryable: false, text: 'A command was called with a wrong or missing argument.' },
  MESH_ERR_TOKEN_MALFORMED: { retryable: false, text: 'A join token is not in the mesh-agent token format or its checksum does not match (damaged while copied).' },
  MESH_ERR_TOKEN_UNKNOWN: { retryable: false, text: 'The server has no join token with this id (never created, or created on another server).' },
  MESH_ERR_TOKEN_TAMPERED: { retryable: false, text: 'The join token id exists but its secret does not match the stored hash.' },
  MESH_ERR_TOKEN_EXPIRED: { retryable: false, text: 'The join token is past its TTL.' },
  MESH_ERR_TOKEN_USED: { retryable: false, text: 'The join token has no uses left.' },
  MESH_ERR_CA_PIN_MISMATCH: { retryable: false, text: 'The server presented a CA whose fingerprint differs from the one pinned in the join token.' },
  MESH_ERR_CSR_INVALID: { retryable: false, text: 'A certificate signing request could not be parsed, its signature is wrong, or it asks for an identity the caller may not have.' },
  MESH_ERR_CERT_INVALID: { retryable: false, text: 'A certificate could not be parsed or lacks what the mesh needs (SPIFFE URI SAN, validity).' },
  MESH_ERR_SPIFFE_ID: { retryable: false, text: 'A SPIFFE ID is malformed or not of the expected form.' },
  MESH_ERR_PEER_IDENTITY: { retryable: false, text: 'A peer presented a certificate whose SPIFFE ID is not the one expected (outbound) or not allowed (inbound).' },
  MESH_ERR_NOT_ENROLLED: { retryable: false, text: 'The agent has no saved enrollment in its state dir and no join token was given.' },
  MESH_ERR_SERVER_UNREACHABLE: { retryable: true, text: 'The control-plane server could not be reached; agents keep serving with their cached state and retry with backoff.' },
  MESH_ERR_ADMIN_AUTH: { retryable: false, text: 'An admin API call had no token or a wrong one.' },
  MESH_ERR_NOT_FOUND: { retryable: false, text: 'The requested object does not exist.' },
  MESH_ERR_BAD_REQUEST: { retryable: false, text: 'An HTTP or channel request body was malformed; the message names the field.' },
  MESH_ERR_TOO_LARGE: { retryable: false, text: 'An HTTP request body is larger than the API reads; the message names the limit.' },
  MESH_ERR_STORE: { retryable: false, text: 'The SQLite store could not be opened or migrated (wrong file, newer schema, permissions).' },
  MESH_ERR_STATE_DIR: { retryable: false, text: 'The agent state dir could not be read or written, or holds damaged files.' },
  MESH_ERR_ENDPOINTS_FILE: { retryable: true, text: 'The static endpoints file is missing or invalid; the last good endpoints are kept.' },
  MESH_ERR_UPSTREAM_CONNECT: { retryable: true, text: 'Connecting to an upstream endpoint failed (refused, timed out, TLS handshake failed).' },
  MESH_ERR_MUX_PROTOCOL: { retryable: true, text: 'A peer agent broke the mesh-mux/1 framing (docs/mux.md); the multiplexed connection is closed and its requests fail or are retried.' },
  MESH_ERR_HTTP_MALFORMED: { retryable: false, text: 'Bytes on a proxy port are not valid HTTP/1.1; the connection is answered with 400/431 and closed.' },
  MESH_ERR_LISTEN: { retryable: false, text: 'A port could not be bound (in use, no permission).' },
  MESH_ERR_INTERNAL: { retryable: true, text: 'An unexpected failure inside mesh-agent; the message and the log say what. Please report it.' },
  MESH_ERR_CONSUL: { retryable: true, text: 'A request to Consul failed (unreachable, timed out, or answered an error); discovery keeps the last known endpoints and retries with backoff.' },
  MESH_ERR_AUTHZ_DENIED: { retryable: false, text: 'An AuthorizationPolicy denied a request or connection on the inbound side; HTTP gets 403 (gRPC: status 7 PERMISSION_DENIED) naming the policy and rule, TCP is closed.' },
  MESH_ERR_MTLS_MODE: { retryable: false, text: 'An inbound connection did not come the way the service\'s PeerAuthentication mode takes: plaintext to a STRICT service, mTLS to a DISABLE one, or plaintext no single service can take.' },
  MESH_ERR_LOCAL_SERVICE_INVALID: { retryable: false, text: 'A service the local Consul agent lists opted in to the mesh (tag mesh or meta mesh-enabled) but its registration is not usable (name, port or a mesh-* meta value); it is left out of the mesh, the other services are kept.' },
  MESH_ERR_POLICY_INVALID: { retryable: false, text: 'A policy document (VirtualService, DestinationRule, ServiceEntry, ...) is invalid or conflicts with another; the error lists every problem with its file, document, line and field path, and nothing is applied.' },
  MESH_ERR_CAPTURE: { retryable: false, text: 'Transparent capture could not program the nat table: iptables is missing, the process lacks CAP_NET_ADMIN, or iptables-restore refused the rules (its message is included).' },
  MESH_ERR_GOSSIP: { retryable: true, text: 'A policy gossip exchange with a peer agent failed: the peer broke the protocol, sent more than the size cap, offered a version that is not newer, or did not answer in time; the agent keeps its version and asks other peers later.' },
  MESH_ERR_TAP_LIMIT: { retryable: true, text: 'The server runs as many live taps (mesh-agent tap) as it allows; stop one and try again.' },
  MESH_ERR_NOT_LEADER: { retryable: true, text: 'A server replica in HA mode was asked for a write (apply, delete, rollback, token create) but does not lead; it redirects to the leader (HTTP 307 with Location), or answers 503 while no replica leads.' },
  MESH_ERR_HA_KEY: { retryable: false, text: 'The HA key-encryption key file is missing, unreadable, readable by others, not 32 bytes, or not the key that sealed the CA key in Consul KV.' },
  MESH_ERR_POLICY_SIGNATURE: { retryable: false, text: 'A mesh policy version does not verify: its documents do not match the signed digest, the signature is wrong, or the signing certificate is not the mesh\'s policy signer; the agent refuses it and keeps the last good version.' },
} as const;

export type MeshErrorCode = keyof typeof ERROR_CATALOGUE;

/** The one error type of mesh-agent: a stable code, a message a user can act on, and an optional cause. */
export class MeshError extends Error {
  readonly code: MeshErrorCode;
  readonly retryable: boolean;

  constructor(code: MeshErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MeshError';
    this.code = code;
    // A code from a newer peer may not be in this catalogue: keep it, and assume retrying will not help.
    this.retryable = ERROR_CATALOGUE[code]?.retryable ?? false;
  }

  toJSON(): { code: MeshErrorCode; message: string; retryable: boolean } {
    return { code: this.code, message: this.message, retryable: this.retryable };
  }
}

/** True when `err` is a MeshError, optionally with the given code. */
export function isMeshError(err: unknown, code?: MeshErrorCode): err is MeshError {
  return err instanceof MeshError && (code === undefined || err.code === code);
}

/** A short one-line text for any thrown value, for logs. */
export function describeError(err: unknown): string {
  if (err instanceof MeshError) return `${err.code}: ${err.message}`;
  if (err instanceof Error) return (err as NodeJS.ErrnoException).code ? `${(err as NodeJS.ErrnoException).code}: ${err.message}` : err.message;
  return String(err);
}
