import { formatJoinToken, parseJoinToken } from '../../shared/index.js';
import { conflict, notFound } from '../errors.js';
import { hashSecret, newSecret } from '../secrets.js';
import { isValid, type Store, type TokenRecord, type TokenRole } from '../store/index.js';

/** The tokens the cluster manager makes itself, from its flags or the files it keeps them in. */
export const DEFAULT_TOKENS = {
  admin: 'default-admin',
  join: 'default-join',
  telemetry: 'telemetry',
} as const;

/** What a token looks like to whoever lists them: never its secret or hash. */
export interface TokenView {
  name: string;
  role: TokenRole;
  createdAt: number;
  expiresAt: number | null;
  revokedAt: number | null;
  state: 'valid' | 'expired' | 'revoked';
}

/**
 * Every credential an operator or a node presents, one place: named tokens with a role, stored hashed, that
 * can expire and be revoked. Node secrets are the nodes' own (NodeStore).
 */
export class AccessTokens {
  constructor(
    private readonly store: Store,
    private readonly caFingerprint: () => string | undefined,
  ) {}

  /**
   * The token of this name holds `secret` with `role` from now on, unless it already did: then it stays as it is
   * (a revoked default is not brought back by a restart; a new secret given by flag is a new token).
   */
  keepDefault(name: string, role: TokenRole, secret: string, now = Date.now()): void {
    const secretHash = hashSecret(secret);
    const existing = this.store.tokens.get(name);
    if (existing?.secretHash === secretHash && existing.role === role) return;
    this.store.tokens.upsert({ name, role, secretHash, createdAt: now, expiresAt: null, revokedAt: null });
  }

  /** The valid token behind a secret (a join token's `E10…::` form included), or undefined. */
  authenticate(presented: string, now = Date.now()): TokenRecord | undefined {
    const token = this.store.tokens.byHashOf(hashSecret(parseJoinToken(presented).secret));
    return token && isValid(token, now) ? token : undefined;
  }

  /** Whether a token that authenticated earlier still would (not revoked, expired or replaced since). */
  stillValid(token: TokenRecord, now = Date.now()): boolean {
    const current = this.store.tokens.get(token.name);
    return current !== undefined && current.secretHash === token.secretHash && isValid(current, now);
  }

  /** A new token; its secret is in the answer and nowhere else (a join token in the form that pins the CA). */
  create(
    name: string,
    role: TokenRole,
    ttlMs: number | undefined,
    now = Date.now(),
  ): TokenView & { token: string } {
    if (this.store.tokens.get(name))
      throw conflict(`a token named "${name}" exists (revoked ones keep their name)`);
    const secret = newSecret(32);
    const record: TokenRecord = {
      name,
      role,
      secretHash: hashSecret(secret),
      createdAt: now,
      expiresAt: ttlMs === undefined ? null : now + ttlMs,
      revokedAt: null,
    };
    this.store.transaction(() => {
      this.store.tokens.upsert(record);
      this.store.events.record('token.created', `${role} token ${name} created`, {});
    });
    const token = role === 'join' ? formatJoinToken({ secret, caFingerprint: this.caFingerprint() }) : secret;
    return { ...view(record, now), token };
  }

  revoke(name: string, now = Date.now()): TokenView {
    const revoked = this.store.transaction(() => {
      const token = this.store.tokens.revoke(name, now);
      if (token) this.store.events.record('token.revoked', `${token.role} token ${name} revoked`, {});
      return token;
    });
    if (!revoked) throw notFound('token', name);
    return view(revoked, now);
  }

  list(now = Date.now()): TokenView[] {
    return this.store.tokens.list().map((token) => view(token, now));
  }
}

function view(token: TokenRecord, now: number): TokenView {
  const state = token.revokedAt !== null ? 'revoked' : isValid(token, now) ? 'valid' : 'expired';
  return {
    name: token.name,
    role: token.role,
    createdAt: token.createdAt,
    expiresAt: token.expiresAt,
    revokedAt: token.revokedAt,
    state,
  };
}
