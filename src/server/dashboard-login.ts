// How a browser gets into the dashboard: a one-time login code made with the admin token, traded for an HttpOnly session cookie (docs/adr/0014-dashboard-browser-login.md).

import { createHash, randomBytes } from 'node:crypto';

/** A login code works once, within this time. @default 2 min */
export const LOGIN_CODE_TTL_MS = 120_000;
/** A dashboard session lasts this long (in memory: a server restart ends every session). @default 12 h */
export const SESSION_TTL_MS = 12 * 3_600_000;
/** The session cookie's name. */
export const SESSION_COOKIE = 'mesh_dashboard';
/** Codes and sessions outstanding at once; the oldest go first. */
const MAX_OUTSTANDING = 200;

const digest = (secret: string): string => createHash('sha256').update(secret).digest('hex');

/** Secrets by their SHA-256, with when each expires, oldest first. */
class Expiring {
  private readonly byDigest = new Map<string, number>();

  add(secret: string, expiresAt: number): void {
    this.byDigest.set(digest(secret), expiresAt);
    if (this.byDigest.size > MAX_OUTSTANDING) this.byDigest.delete(this.byDigest.keys().next().value!);
  }

  /** Whether `secret` is held and not expired; `consume` removes it either way. */
  check(secret: string, now: number, consume: boolean): boolean {
    const key = digest(secret);
    const expiresAt = this.byDigest.get(key);
    if (expiresAt === undefined) return false;
    if (consume || expiresAt <= now) this.byDigest.delete(key);
    return expiresAt > now;
  }
}

/** The outstanding login codes and sessions. Only digests are kept, so a memory dump shows no usable secret. */
export class DashboardLogins {
  private readonly codes = new Expiring();
  private readonly sessions = new Expiring();

  constructor(private readonly now: () => number) {}

  /** A new single-use code (the caller proved the admin token). */
  newCode(): { code: string; expiresAt: number } {
    const code = randomBytes(18).toString('base64url');
    const expiresAt = this.now() + LOGIN_CODE_TTL_MS;
    this.codes.add(code, expiresAt);
    return { code, expiresAt };
  }

  /** Trades a code for a new session id; undefined when the code is unknown, used or expired. */
  redeem(code: string): string | undefined {
    if (!this.codes.check(code, this.now(), true)) return undefined;
    const session = randomBytes(24).toString('base64url');
    this.sessions.add(session, this.now() + SESSION_TTL_MS);
    return session;
  }

  /** Whether a Cookie header carries a live session. */
  hasSession(cookieHeader: string | undefined): boolean {
    const session = sessionFromCookie(cookieHeader);
    return session !== undefined && this.sessions.check(session, this.now(), false);
  }

  /** The Set-Cookie value for a session: HttpOnly (page scripts cannot read it), SameSite=Strict (no cross-site use). */
  static cookie(session: string): string {
    return `${SESSION_COOKIE}=${session}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${SESSION_TTL_MS / 1000}`;
  }
}

function sessionFromCookie(header: string | undefined): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const [name, value] = part.trim().split('=', 2);
    if (name === SESSION_COOKIE && value) return value;
  }
  return undefined;
}
