import type { Command, CommandKind } from '../../shared/index.js';
import type { Db } from './database.js';

export interface CommandRecord {
  id: string;
  nodeId: string;
  kind: CommandKind;
  jobId: string;
  instance: number;
  generation: number;
  payload: Command;
  createdAt: number;
  sentAt: number | null;
  attempts: number;
  ackedAt: number | null;
  ok: boolean | null;
  error: string | null;
}

interface CommandRow {
  id: string;
  node_id: string;
  kind: CommandKind;
  job_id: string;
  instance: number;
  generation: number;
  payload: string;
  created_at: number;
  sent_at: number | null;
  attempts: number;
  acked_at: number | null;
  ok: number | null;
  error: string | null;
}

const fromRow = (row: CommandRow): CommandRecord => ({
  id: row.id,
  nodeId: row.node_id,
  kind: row.kind,
  jobId: row.job_id,
  instance: row.instance,
  generation: row.generation,
  payload: JSON.parse(row.payload) as Command,
  createdAt: row.created_at,
  sentAt: row.sent_at,
  attempts: row.attempts,
  ackedAt: row.acked_at,
  ok: row.ok === null ? null : row.ok === 1,
  error: row.error,
});

/** The command outbox: every command stays here until its node acks it, across restarts. */
export class CommandStore {
  constructor(private readonly db: Db) {}

  insert(command: Command, nodeId: string, now: number): void {
    this.db
      .prepare(
        `INSERT INTO commands (id, node_id, kind, job_id, instance, generation, payload, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        command.id,
        nodeId,
        command.command,
        command.job.id,
        command.instance,
        command.generation,
        JSON.stringify(command),
        now,
      );
  }

  get(id: string): CommandRecord | undefined {
    const row = this.db.prepare('SELECT * FROM commands WHERE id = ?').get(id) as CommandRow | undefined;
    return row ? fromRow(row) : undefined;
  }

  unacked(nodeId?: string): CommandRecord[] {
    const rows = nodeId
      ? this.db
          .prepare('SELECT * FROM commands WHERE acked_at IS NULL AND node_id = ? ORDER BY created_at')
          .all(nodeId)
      : this.db.prepare('SELECT * FROM commands WHERE acked_at IS NULL ORDER BY created_at').all();
    return (rows as CommandRow[]).map(fromRow);
  }

  markSent(id: string, now: number): void {
    this.db.prepare('UPDATE commands SET sent_at = ?, attempts = attempts + 1 WHERE id = ?').run(now, id);
  }

  /** Returns false when the command was unknown or already acked (a duplicate ack). */
  markAcked(id: string, ok: boolean, error: string | null, now: number): boolean {
    const result = this.db
      .prepare('UPDATE commands SET acked_at = ?, ok = ?, error = ? WHERE id = ? AND acked_at IS NULL')
      .run(now, ok ? 1 : 0, error, id);
    return result.changes === 1;
  }

  /** Nodes that were ever sent a command for this job: they must all ack its delete. */
  nodesEverCommanded(jobId: string): string[] {
    return (
      this.db.prepare('SELECT DISTINCT node_id FROM commands WHERE job_id = ?').all(jobId) as {
        node_id: string;
      }[]
    ).map((row) => row.node_id);
  }

  unackedForJob(jobId: string, kind: CommandKind): CommandRecord[] {
    return (
      this.db
        .prepare('SELECT * FROM commands WHERE job_id = ? AND kind = ? AND acked_at IS NULL')
        .all(jobId, kind) as CommandRow[]
    ).map(fromRow);
  }

  /**
   * An operator removed the node: its commands will never be acked. Drops them; returns the jobs of those that
   * were unacked (a job in `deleting` may have waited for them).
   */
  forgetNode(nodeId: string): string[] {
    const jobs = (
      this.db
        .prepare('SELECT DISTINCT job_id FROM commands WHERE node_id = ? AND acked_at IS NULL')
        .all(nodeId) as { job_id: string }[]
    ).map((row) => row.job_id);
    this.db.prepare('DELETE FROM commands WHERE node_id = ?').run(nodeId);
    return jobs;
  }

  /** Acked commands older than the horizon are history; the outbox keeps only what matters. */
  pruneAcked(before: number): number {
    return this.db.prepare('DELETE FROM commands WHERE acked_at IS NOT NULL AND acked_at < ?').run(before)
      .changes;
  }
}
