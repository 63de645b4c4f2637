import { createHash, X509Certificate } from 'node:crypto';

/**
 * A join token as the cluster manager prints it: `E10<fingerprint>::<secret>`, where the fingerprint is the
 * SHA-256 of the cluster CA's certificate (DER, 64 hex digits). A worker holding it verifies the cluster manager
 * on first contact with nothing else to copy (the form of K3s' secure token). A bare secret is a token too:
 * it proves the worker to the cluster manager, but not the other way round.
 */
export interface JoinToken {
  /** What the cluster manager checks. */
  secret: string;
  /** The cluster CA a worker pins, lower-case hex; absent for a bare secret. */
  caFingerprint?: string;
}

const PINNED = /^E10([0-9a-fA-F]{64})::(.+)$/s;

export function parseJoinToken(text: string): JoinToken {
  const match = PINNED.exec(text.trim());
  if (!match) return { secret: text.trim() };
  return { caFingerprint: match[1]!.toLowerCase(), secret: match[2]! };
}

export function formatJoinToken(token: JoinToken): string {
  return token.caFingerprint ? `E10${token.caFingerprint}::${token.secret}` : token.secret;
}

/** What a join token pins: the SHA-256 of a certificate's DER (the first one in a PEM text), lower-case hex. */
export function certificateFingerprint(pem: string): string {
  return createHash('sha256').update(new X509Certificate(pem).raw).digest('hex');
}
