import type { Db } from './database.js';
import type { UndoLog } from './undo-log.js';

/**
 * What a token may do. `join` registers nodes (`/init`) and nothing else; `admin` may do everything; `deployer`
 * reads everything and changes jobs only; `read-only` reads, and is the MQTT telemetry login (`operator`).
 */
export const TOKEN_ROLES = ['admin', 'deployer', 'read-only', 'join'] as const;
export type TokenRole = (typeof TOKEN_ROLES)[number];

export interface TokenRecord {
  /** Unique; `default` and `telemetry` are the ones the cluster manager makes itself. */
  name: string;
  role: TokenRole;
  /** SHA-256 of the secret, hex: the secret itself is never stored. */
  secretHash: string;
  createdAt: number;
  expiresAt: number | null;
  revokedAt: number | null;
}

interface TokenRow {
  name: string;
  role: TokenRole;
  secret_hash: string;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
}

const fromRow = (row: TokenRow): TokenRecord => ({
  name: row.name,
  role: row.role,
  secretHash: row.secret_hash,
  createdAt: row.created_at,
  expiresAt: row.expires_at,
  revokedAt: row.revoked_at,
});

/** A token that opens something: neither revoked nor expired. */
export function isValid(token: TokenRecord, now: number): boolean {
  return token.revokedAt === null && (token.expiresAt === null || token.expiresAt > now);
}

/**
 * Named tokens with a role, held in memory by the hash of their secret (every request and registration looks
 * one up) and written through to SQLite. Revoked ones stay, marked, so that a name is not reused unnoticed.
 */
export class TokenStore {
  private readonly byHash = new Map<string, TokenRecord>();
  private readonly byName = new Map<string, TokenRecord>();

  constructor(
    private readonly db: Db,
    private readonly undo: UndoLog,
  ) {
    for (const row of db.prepare('SELECT * FROM tokens').all() as TokenRow[]) this.put(fromRow(row));
  }

  /** The token whose secret hashes to this, valid or not. */
  byHashOf(secretHash: string): TokenRecord | undefined {
    return this.byHash.get(secretHash);
  }

  get(name: string): TokenRecord | undefined {
    return this.byName.get(name);
  }

  list(): TokenRecord[] {
    return [...this.byName.values()].sort((a, b) => a.createdAt - b.createdAt || (a.name < b.name ? -1 : 1));
  }

  /** Adds a token, or gives an existing name a new secret and role (the flag-given defaults at start). */
  upsert(token: TokenRecord): void {
    this.db
      .prepare(
        `INSERT INTO tokens (name, role, secret_hash, created_at, expires_at, revoked_at)
         VALUES (@name, @role, @secretHash, @createdAt, @expiresAt, @revokedAt)
         ON CONFLICT(name) DO UPDATE SET role = excluded.role, secret_hash = excluded.secret_hash,
           expires_at = excluded.expires_at, revoked_at = excluded.revoked_at`,
      )
      .run(token);
    this.swap(this.byName.get(token.name), token);
  }

  revoke(name: string, now: number): TokenRecord | undefined {
    const token = this.byName.get(name);
    if (!token || token.revokedAt !== null) return token;
    this.db.prepare('UPDATE tokens SET revoked_at = ? WHERE name = ?').run(now, name);
    const revoked = { ...token, revokedAt: now };
    this.swap(token, revoked);
    return revoked;
  }

  private swap(previous: TokenRecord | undefined, next: TokenRecord): void {
    this.undo.swap(previous, next, {
      put: (token) => this.put(token),
      drop: (token) => {
        this.byName.delete(token.name);
        this.byHash.delete(token.secretHash);
      },
    });
  }

  private put(token: TokenRecord): void {
    this.byName.set(token.name, token);
    this.byHash.set(token.secretHash, token);
  }
}
