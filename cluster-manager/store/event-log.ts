import type { ClusterEvent } from '../../shared/index.js';
import { ChangeFeed } from './change-feed.js';
import type { Db } from './database.js';

const KEEP_EVENTS = 10_000;

/** What `recent` keeps of the events: each given field must match. */
export interface EventFilter {
  type?: string;
  nodeId?: string;
  jobId?: string;
  /** Only events after this one (by id). */
  afterId?: number;
}

interface EventRow {
  id: number;
  ts: number;
  type: string;
  message: string;
  node_id: string | null;
  job_id: string | null;
}

/** Recent cluster events (registrations, commands, status changes), newest first on read. */
export class EventLog {
  /**
   * Hears the id of every event recorded, inside the writer's transaction: a follower reads what is new once the
   * transaction is over (an event of a transaction rolled back is never read).
   */
  readonly recorded = new ChangeFeed();

  constructor(private readonly db: Db) {}

  record(
    type: string,
    message: string,
    refs: { nodeId?: string; jobId?: string } = {},
    now = Date.now(),
  ): void {
    const { lastInsertRowid } = this.db
      .prepare('INSERT INTO events (ts, type, message, node_id, job_id) VALUES (?, ?, ?, ?, ?)')
      .run(now, type, message, refs.nodeId ?? null, refs.jobId ?? null);
    this.recorded.emit(String(lastInsertRowid));
  }

  /** Keeps the newest events only; returns how many went. */
  prune(keep = KEEP_EVENTS): number {
    return this.db.prepare('DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?').run(keep)
      .changes;
  }

  /**
   * The newest `limit` events, newest first: of one type, about one node or one job, and after one event (by id,
   * for a follower that asks again) when those are given.
   */
  recent(limit: number, filter: EventFilter = {}): ClusterEvent[] {
    return this.select(filter, 'DESC', limit);
  }

  /** The oldest `limit` events after `filter.afterId`, oldest first: what a follower missed, in order. */
  following(limit: number, filter: EventFilter): ClusterEvent[] {
    return this.select(filter, 'ASC', limit);
  }

  /** The id of the newest event kept (0 when there is none). */
  newestId(): number {
    return (this.db.prepare('SELECT MAX(id) AS id FROM events').get() as { id: number | null }).id ?? 0;
  }

  /** The id of the oldest event kept (0 when there is none): older ones were pruned. */
  oldestId(): number {
    return (this.db.prepare('SELECT MIN(id) AS id FROM events').get() as { id: number | null }).id ?? 0;
  }

  private select(filter: EventFilter, order: 'ASC' | 'DESC', limit: number): ClusterEvent[] {
    const conditions = (
      [
        ['type = ?', filter.type],
        ['node_id = ?', filter.nodeId],
        ['job_id = ?', filter.jobId],
        ['id > ?', filter.afterId],
      ] as const
    ).filter(([, value]) => value !== undefined);
    const where = conditions.length > 0 ? ` WHERE ${conditions.map(([sql]) => sql).join(' AND ')}` : '';
    const rows = this.db
      .prepare(`SELECT * FROM events${where} ORDER BY id ${order} LIMIT ?`)
      .all(...conditions.map(([, value]) => value), limit) as EventRow[];
    return rows.map((row) => ({
      id: row.id,
      ts: row.ts,
      type: row.type,
      message: row.message,
      ...(row.node_id ? { nodeId: row.node_id } : {}),
      ...(row.job_id ? { jobId: row.job_id } : {}),
    }));
  }
}
