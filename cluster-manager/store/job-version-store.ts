import type { JobSpec, JobVersion } from '../../shared/index.js';
import type { Db } from './database.js';

/** How many versions of a job are kept; older ones go, unless an instance still runs one. */
export const VERSIONS_KEPT = 10;

interface VersionRow {
  version: number;
  spec: string;
  created_at: number;
  stable: number;
}

const versionFromRow = (row: VersionRow): JobVersion => ({
  version: row.version,
  spec: JSON.parse(row.spec) as JobSpec,
  createdAt: row.created_at,
  stable: row.stable === 1,
});

/**
 * Every spec a job had, by version (`GET /api/jobs/:id/versions`, and what instances of an older version run
 * while a roll-out replaces them). The current version's spec is also the job's own; older ones are read from
 * SQLite when an instance needs them and kept in memory for as long as the job lives (a roll-out reads them on
 * every step). Versions are immutable once written, so a cached spec never goes stale: an insert that rolls back
 * leaves at most an entry for a number no row or instance refers to, which the next insert of that number
 * overwrites.
 */
export class JobVersionStore {
  private readonly specs = new Map<string, Map<number, JobSpec>>();

  constructor(private readonly db: Db) {}

  insert(jobId: string, version: number, spec: JobSpec, createdAt: number, stable = false): void {
    this.db
      .prepare('INSERT INTO job_versions (job_id, version, spec, created_at, stable) VALUES (?, ?, ?, ?, ?)')
      .run(jobId, version, JSON.stringify(spec), createdAt, stable ? 1 : 0);
    this.cache(jobId, version, spec);
  }

  /** The spec of one version, or undefined if it was never written (or pruned). */
  specAt(jobId: string, version: number): JobSpec | undefined {
    const cached = this.specs.get(jobId)?.get(version);
    if (cached) return cached;
    const row = this.db
      .prepare('SELECT spec FROM job_versions WHERE job_id = ? AND version = ?')
      .get(jobId, version) as { spec: string } | undefined;
    if (!row) return undefined;
    const spec = JSON.parse(row.spec) as JobSpec;
    this.cache(jobId, version, spec);
    return spec;
  }

  /** Newest first. */
  list(jobId: string): JobVersion[] {
    const rows = this.db
      .prepare('SELECT * FROM job_versions WHERE job_id = ? ORDER BY version DESC')
      .all(jobId) as VersionRow[];
    return rows.map(versionFromRow);
  }

  get(jobId: string, version: number): JobVersion | undefined {
    const row = this.db
      .prepare('SELECT * FROM job_versions WHERE job_id = ? AND version = ?')
      .get(jobId, version) as VersionRow | undefined;
    return row ? versionFromRow(row) : undefined;
  }

  /** The newest version whose roll-out succeeded, below `below`: where an automatic revert goes. */
  latestStable(jobId: string, below: number): JobVersion | undefined {
    const row = this.db
      .prepare(
        'SELECT * FROM job_versions WHERE job_id = ? AND stable = 1 AND version < ? ORDER BY version DESC LIMIT 1',
      )
      .get(jobId, below) as VersionRow | undefined;
    return row ? versionFromRow(row) : undefined;
  }

  markStable(jobId: string, version: number): void {
    this.db
      .prepare('UPDATE job_versions SET stable = 1 WHERE job_id = ? AND version = ?')
      .run(jobId, version);
  }

  /**
   * Drops versions older than the newest VERSIONS_KEPT that no instance runs (`inUse`), from SQLite and memory.
   * The newest stable version is kept too, whatever its age: it is where a failed roll-out goes back to.
   */
  prune(jobId: string, current: number, inUse: ReadonlySet<number>): void {
    const stable = this.latestStable(jobId, current + 1)?.version;
    const oldest = current - VERSIONS_KEPT + 1;
    const doomed = (
      this.db
        .prepare('SELECT version FROM job_versions WHERE job_id = ? AND version < ?')
        .all(jobId, oldest) as { version: number }[]
    )
      .map((row) => row.version)
      .filter((version) => !inUse.has(version) && version !== stable);
    for (const version of doomed) {
      this.db.prepare('DELETE FROM job_versions WHERE job_id = ? AND version = ?').run(jobId, version);
      this.specs.get(jobId)?.delete(version);
    }
    // Only versions instances still run need to stay in memory; the current one is the job's own spec.
    const cached = this.specs.get(jobId);
    if (cached) for (const version of cached.keys()) if (!inUse.has(version)) cached.delete(version);
  }

  /** The job is gone (SQLite deleted its versions with it). */
  forgetJob(jobId: string): void {
    this.specs.delete(jobId);
  }

  private cache(jobId: string, version: number, spec: JobSpec): void {
    let specs = this.specs.get(jobId);
    if (!specs) {
      specs = new Map();
      this.specs.set(jobId, specs);
    }
    specs.set(version, spec);
  }
}
