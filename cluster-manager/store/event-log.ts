import type { ClusterEvent } from '../../shared/index.js';
import type { Db } from './database.js';

const KEEP_EVENTS = 10_000;

/** Recent cluster events (registrations, commands, status changes), newest first on read. */
export class EventLog {
  constructor(private readonly db: Db) {}

  record(
    type: string,
    message: string,
    refs: { nodeId?: string; jobId?: string } = {},
    now = Date.now(),
  ): void {
    this.db
      .prepare('INSERT INTO events (ts, type, message, node_id, job_id) VALUES (?, ?, ?, ?, ?)')
      .run(now, type, message, refs.nodeId ?? null, refs.jobId ?? null);
  }

  /** Keeps the newest events only; returns how many went. */
  prune(keep = KEEP_EVENTS): number {
    return this.db.prepare('DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?').run(keep)
      .changes;
  }

  /** The newest `limit` events, of one type when `type` is given. */
  recent(limit: number, type?: string): ClusterEvent[] {
    const rows = (
      type === undefined
        ? this.db.prepare('SELECT * FROM events ORDER BY id DESC LIMIT ?').all(limit)
        : this.db.prepare('SELECT * FROM events WHERE type = ? ORDER BY id DESC LIMIT ?').all(type, limit)
    ) as {
      id: number;
      ts: number;
      type: string;
      message: string;
      node_id: string | null;
      job_id: string | null;
    }[];
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
