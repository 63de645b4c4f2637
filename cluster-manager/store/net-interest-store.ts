import type { Db } from './database.js';

/**
 * Which node asked about which job's overlay addresses (its net manager caches the job's route table and gets
 * pushes when it changes), and a digest of the table last pushed for each job. Both survive a restart, so a
 * change made while the cluster manager was down is still pushed, and an unchanged table is not pushed again.
 * Interest in a job that went away is kept, marked removed, until the node announces again and is told (or the
 * interest would have expired anyway).
 */
export class NetInterestStore {
  constructor(private readonly db: Db) {}

  /** Records or refreshes that `nodeId` uses `jobId`'s table. */
  record(nodeId: string, jobId: string, now: number): void {
    this.db
      .prepare(
        `INSERT INTO net_interest (node_id, job_id, asked_at) VALUES (?, ?, ?)
         ON CONFLICT(node_id, job_id) DO UPDATE SET asked_at = excluded.asked_at, removed_at = NULL`,
      )
      .run(nodeId, jobId, now);
  }

  nodesInterestedIn(jobId: string): string[] {
    return (
      this.db
        .prepare('SELECT node_id FROM net_interest WHERE job_id = ? AND removed_at IS NULL ORDER BY node_id')
        .all(jobId) as { node_id: string }[]
    ).map((row) => row.node_id);
  }

  /** Every job the node uses, and every job it used that went away since it last announced. */
  jobsOf(nodeId: string): string[] {
    return (
      this.db.prepare('SELECT job_id FROM net_interest WHERE node_id = ? ORDER BY job_id').all(nodeId) as {
        job_id: string;
      }[]
    ).map((row) => row.job_id);
  }

  /** Every job some node is interested in (not those marked removed). */
  jobs(): string[] {
    return (
      this.db
        .prepare('SELECT DISTINCT job_id FROM net_interest WHERE removed_at IS NULL ORDER BY job_id')
        .all() as { job_id: string }[]
    ).map((row) => row.job_id);
  }

  /**
   * Forgets interest not refreshed since `before`, and interest marked removed before `before` (a node that
   * has not announced for that long has long dropped its idle tables); returns how many went.
   */
  expire(before: number): number {
    const changes = this.db
      .prepare('DELETE FROM net_interest WHERE (removed_at IS NULL AND asked_at < ?) OR removed_at < ?')
      .run(before, before).changes;
    this.db.prepare('DELETE FROM net_tables WHERE job_id NOT IN (SELECT job_id FROM net_interest)').run();
    return changes;
  }

  /** The node was removed: it asks for nothing any more. */
  forgetNode(nodeId: string): void {
    this.db.prepare('DELETE FROM net_interest WHERE node_id = ?').run(nodeId);
  }

  forget(nodeId: string, jobId: string): void {
    this.db.prepare('DELETE FROM net_interest WHERE node_id = ? AND job_id = ?').run(nodeId, jobId);
  }

  /** The job is gone: nobody needs its table any more; its interest waits for each node's next announce. */
  markJobRemoved(jobId: string, now: number): void {
    this.db
      .prepare('UPDATE net_interest SET removed_at = ? WHERE job_id = ? AND removed_at IS NULL')
      .run(now, jobId);
    this.db.prepare('DELETE FROM net_tables WHERE job_id = ?').run(jobId);
  }

  /** The digest of the table last pushed to every node interested in the job. */
  pushedDigest(jobId: string): string | undefined {
    const row = this.db.prepare('SELECT digest FROM net_tables WHERE job_id = ?').get(jobId) as
      | { digest: string }
      | undefined;
    return row?.digest;
  }

  setPushedDigest(jobId: string, digest: string, now: number): void {
    this.db
      .prepare(
        `INSERT INTO net_tables (job_id, digest, pushed_at) VALUES (?, ?, ?)
         ON CONFLICT(job_id) DO UPDATE SET digest = excluded.digest, pushed_at = excluded.pushed_at`,
      )
      .run(jobId, digest, now);
  }
}
