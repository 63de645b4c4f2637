import { answeredAt, type RouteCache } from './route-cache.js';

/**
 * A cached answer older than this that disagrees with an authenticated sender may be stale (the instance just
 * moved to that worker, or its address was freed and handed out again): it is checked again with the cluster
 * manager before the packet is called spoofed. A newer answer decides at once.
 */
export const RECHECK_SOURCE_AFTER_MS = 1000;

export type Sender = 'yes' | 'no' | 'unknown';

/** What the check counts: packets called spoofed, and sources asked about again. */
export interface SourceCheckCounters {
  spoofedSource: number;
  sourceRechecks: number;
}

/**
 * Encrypted overlay: whether a packet's source instance runs on the worker the packet authenticated as. The
 * route cache knows where each instance runs; while it does not know the source yet, or while an old answer that
 * disagrees is being checked again, the answer is `unknown` (the caller holds the packet and asks again when
 * tables arrive). At most one re-check per source is under way, so a worker that keeps spoofing costs one query
 * per RECHECK_SOURCE_AFTER_MS at most.
 */
export class SourceCheck {
  /** Sources asked about again, with when: until a newer answer arrives, their packets wait. */
  private readonly rechecks = new Map<number, number>();

  constructor(
    private readonly routes: RouteCache,
    private readonly query: (ip: number) => void,
    private readonly counters: SourceCheckCounters,
  ) {}

  sentBy(source: number, nodeId: string, now: number): Sender {
    const known = this.routes.lookup(source, now);
    if (known === undefined || known.kind === 'pending') return 'unknown';
    if (known.kind === 'instance' && known.instance.route?.nodeId === nodeId) {
      this.rechecks.delete(source);
      return 'yes';
    }
    const asked = this.rechecks.get(source);
    if (asked !== undefined && answeredAt(known) < asked) return 'unknown';
    if (asked === undefined && now - answeredAt(known) >= RECHECK_SOURCE_AFTER_MS) {
      this.rechecks.set(source, now);
      this.counters.sourceRechecks++;
      this.query(source);
      return 'unknown';
    }
    this.rechecks.delete(source);
    this.counters.spoofedSource++;
    return 'no';
  }

  /** Whether the source is being checked again (its packets may wait). */
  checking(source: number): boolean {
    return this.rechecks.has(source);
  }

  /** Forgets re-checks older than `timeoutMs`: the query went unanswered; a later packet asks again. */
  expire(now: number, timeoutMs: number): void {
    for (const [ip, asked] of this.rechecks) if (now - asked >= timeoutMs) this.rechecks.delete(ip);
  }
}
