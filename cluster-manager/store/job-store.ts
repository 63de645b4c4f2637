import type { Instance, InstanceStatus, JobDefinition, JobSpec, JobState } from '../../shared/index.js';
import { ChangeFeed } from './change-feed.js';
import type { Db } from './database.js';

export interface JobRecord {
  id: string;
  name: string;
  spec: JobSpec;
  state: JobState;
  createdAt: number;
  updatedAt: number;
  serviceIp: string | null;
}

export interface InstanceRecord {
  jobId: string;
  number: number;
  nodeId: string | null;
  status: InstanceStatus;
  detail: string;
  containerId: string | null;
  generation: number;
  restarts: number;
  startedAt: number | null;
  exitCode: number | null;
  updatedAt: number;
  instanceIp: string | null;
  namespaceIp: string | null;
}

interface JobRow {
  id: string;
  name: string;
  spec: string;
  state: JobState;
  created_at: number;
  updated_at: number;
  service_ip: string | null;
}

interface InstanceRow {
  job_id: string;
  number: number;
  node_id: string | null;
  status: InstanceStatus;
  detail: string;
  container_id: string | null;
  generation: number;
  restarts: number;
  started_at: number | null;
  exit_code: number | null;
  updated_at: number;
  instance_ip: string | null;
  namespace_ip: string | null;
}

const jobFromRow = (row: JobRow): JobRecord => ({
  id: row.id,
  name: row.name,
  spec: JSON.parse(row.spec) as JobSpec,
  state: row.state,
  createdAt: row.created_at,
  updatedAt: row.updated_at,
  serviceIp: row.service_ip,
});

const instanceFromRow = (row: InstanceRow): InstanceRecord => ({
  jobId: row.job_id,
  number: row.number,
  nodeId: row.node_id,
  status: row.status,
  detail: row.detail,
  containerId: row.container_id,
  generation: row.generation,
  restarts: row.restarts,
  startedAt: row.started_at,
  exitCode: row.exit_code,
  updatedAt: row.updated_at,
  instanceIp: row.instance_ip,
  namespaceIp: row.namespace_ip,
});

export function jobDefinition(job: JobRecord): JobDefinition {
  return { id: job.id, ...job.spec };
}

export function instanceView(instance: InstanceRecord, nodeName: string | null): Instance {
  return {
    number: instance.number,
    nodeId: instance.nodeId,
    nodeName,
    status: instance.status,
    detail: instance.detail,
    containerId: instance.containerId,
    generation: instance.generation,
    restarts: instance.restarts,
    ...(instance.instanceIp ? { instanceIp: instance.instanceIp } : {}),
    ...(instance.namespaceIp ? { namespaceIp: instance.namespaceIp } : {}),
    ...(instance.startedAt !== null ? { startedAt: instance.startedAt } : {}),
    ...(instance.exitCode !== null ? { exitCode: instance.exitCode } : {}),
    updatedAt: instance.updatedAt,
  };
}

/** Jobs and their instances. */
export class JobStore {
  /** Ids of jobs whose row or instance rows were written (inserted, updated or removed). */
  readonly changes = new ChangeFeed();

  constructor(private readonly db: Db) {}

  insertJob(job: JobRecord): void {
    this.db
      .prepare(
        `INSERT INTO jobs (id, name, spec, state, created_at, updated_at, service_ip)
         VALUES (@id, @name, @spec, @state, @createdAt, @updatedAt, @serviceIp)`,
      )
      .run({ ...job, spec: JSON.stringify(job.spec) });
    this.changes.emit(job.id);
  }

  getJob(id: string): JobRecord | undefined {
    const row = this.db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined;
    return row ? jobFromRow(row) : undefined;
  }

  /** A job id first, else a live job's name. */
  findJob(idOrName: string): JobRecord | undefined {
    return this.getJob(idOrName) ?? this.findLiveJobByName(idOrName);
  }

  findLiveJobByName(name: string): JobRecord | undefined {
    const row = this.db.prepare("SELECT * FROM jobs WHERE name = ? AND state = 'active'").get(name) as
      | JobRow
      | undefined;
    return row ? jobFromRow(row) : undefined;
  }

  listJobs(): JobRecord[] {
    return (this.db.prepare('SELECT * FROM jobs ORDER BY created_at, id').all() as JobRow[]).map(jobFromRow);
  }

  setJobState(id: string, state: JobState, now: number): void {
    this.db.prepare('UPDATE jobs SET state = ?, updated_at = ? WHERE id = ?').run(state, now, id);
    this.changes.emit(id);
  }

  setJobSpec(id: string, spec: JobSpec, now: number): void {
    this.db
      .prepare('UPDATE jobs SET spec = ?, updated_at = ? WHERE id = ?')
      .run(JSON.stringify(spec), now, id);
    this.changes.emit(id);
  }

  /** Generations are monotonic per job, so a number reused after a scale-down never looks stale to a node. */
  nextGeneration(jobId: string): number {
    const row = this.db
      .prepare('UPDATE jobs SET last_generation = last_generation + 1 WHERE id = ? RETURNING last_generation')
      .get(jobId) as { last_generation: number };
    return row.last_generation;
  }

  lastGeneration(jobId: string): number {
    const row = this.db.prepare('SELECT last_generation FROM jobs WHERE id = ?').get(jobId) as
      | { last_generation: number }
      | undefined;
    return row?.last_generation ?? 0;
  }

  removeJob(id: string): void {
    this.db.prepare('DELETE FROM jobs WHERE id = ?').run(id);
    this.changes.emit(id);
  }

  setServiceIp(id: string, serviceIp: string): void {
    this.db.prepare('UPDATE jobs SET service_ip = ? WHERE id = ?').run(serviceIp, id);
    this.changes.emit(id);
  }

  /** Every service and instance IP held by a job row or an instance row (they share one pool). */
  overlayAddresses(): string[] {
    return (
      this.db
        .prepare(
          `SELECT service_ip AS ip FROM jobs WHERE service_ip IS NOT NULL
           UNION ALL SELECT instance_ip AS ip FROM instances WHERE instance_ip IS NOT NULL`,
        )
        .all() as { ip: string }[]
    ).map((row) => row.ip);
  }

  /** The live job whose service IP, or one of whose instances' instance IP, is `ip`. */
  findLiveJobByAddress(ip: string): JobRecord | undefined {
    const row = this.db
      .prepare(
        `SELECT * FROM jobs WHERE state = 'active' AND (service_ip = ?
           OR id = (SELECT job_id FROM instances WHERE instance_ip = ?))`,
      )
      .get(ip, ip) as JobRow | undefined;
    return row ? jobFromRow(row) : undefined;
  }

  insertInstance(instance: InstanceRecord): void {
    this.db
      .prepare(
        `INSERT INTO instances (job_id, number, node_id, status, detail, container_id, generation, restarts,
           started_at, exit_code, updated_at, instance_ip, namespace_ip)
         VALUES (@jobId, @number, @nodeId, @status, @detail, @containerId, @generation, @restarts,
           @startedAt, @exitCode, @updatedAt, @instanceIp, @namespaceIp)`,
      )
      .run(instance);
    this.changes.emit(instance.jobId);
  }

  updateInstance(instance: InstanceRecord): void {
    this.db
      .prepare(
        `UPDATE instances SET node_id = @nodeId, status = @status, detail = @detail, container_id = @containerId,
           generation = @generation, restarts = @restarts, started_at = @startedAt, exit_code = @exitCode,
           updated_at = @updatedAt, instance_ip = @instanceIp, namespace_ip = @namespaceIp
         WHERE job_id = @jobId AND number = @number`,
      )
      .run(instance);
    this.changes.emit(instance.jobId);
  }

  removeInstance(jobId: string, number: number): void {
    this.db.prepare('DELETE FROM instances WHERE job_id = ? AND number = ?').run(jobId, number);
    this.changes.emit(jobId);
  }

  getInstance(jobId: string, number: number): InstanceRecord | undefined {
    const row = this.db
      .prepare('SELECT * FROM instances WHERE job_id = ? AND number = ?')
      .get(jobId, number) as InstanceRow | undefined;
    return row ? instanceFromRow(row) : undefined;
  }

  instancesOf(jobId: string): InstanceRecord[] {
    return (
      this.db.prepare('SELECT * FROM instances WHERE job_id = ? ORDER BY number').all(jobId) as InstanceRow[]
    ).map(instanceFromRow);
  }

  instancesOnNode(nodeId: string): InstanceRecord[] {
    return (
      this.db
        .prepare('SELECT * FROM instances WHERE node_id = ? ORDER BY job_id, number')
        .all(nodeId) as InstanceRow[]
    ).map(instanceFromRow);
  }

  /** How many instances there are in each status (for metrics), counted by SQLite. */
  countByStatus(): { status: InstanceStatus; count: number }[] {
    return this.db.prepare('SELECT status, COUNT(*) AS count FROM instances GROUP BY status').all() as {
      status: InstanceStatus;
      count: number;
    }[];
  }

  /** Instances in one status, read with SQLite's filter (failover looks at `lost` and `failed` every second). */
  instancesWithStatus(status: InstanceStatus): InstanceRecord[] {
    return (this.db.prepare('SELECT * FROM instances WHERE status = ?').all(status) as InstanceRow[]).map(
      instanceFromRow,
    );
  }

  allInstances(): InstanceRecord[] {
    return (this.db.prepare('SELECT * FROM instances').all() as InstanceRow[]).map(instanceFromRow);
  }

  pendingInstances(): InstanceRecord[] {
    return (
      this.db
        .prepare(
          `SELECT i.* FROM instances i JOIN jobs j ON j.id = i.job_id
           WHERE j.state = 'active' AND i.status = 'pending' ORDER BY j.created_at, i.job_id, i.number`,
        )
        .all() as InstanceRow[]
    ).map(instanceFromRow);
  }
}

export interface MoveRecord {
  jobId: string;
  number: number;
  fromNode: string;
  toNode: string;
  generation: number;
  startedAt: number;
}

interface MoveRow {
  job_id: string;
  number: number;
  from_node: string;
  to_node: string;
  generation: number;
  started_at: number;
}

const moveFromRow = (row: MoveRow): MoveRecord => ({
  jobId: row.job_id,
  number: row.number,
  fromNode: row.from_node,
  toNode: row.to_node,
  generation: row.generation,
  startedAt: row.started_at,
});

/** Moves in flight: the target starts the instance while the source keeps it running (make-before-break). */
export class MoveStore {
  /** Ids of jobs a move of which started or ended. */
  readonly changes = new ChangeFeed();

  constructor(private readonly db: Db) {}

  insert(move: MoveRecord): void {
    this.db
      .prepare(
        `INSERT INTO moves (job_id, number, from_node, to_node, generation, started_at)
         VALUES (@jobId, @number, @fromNode, @toNode, @generation, @startedAt)`,
      )
      .run(move);
    this.changes.emit(move.jobId);
  }

  ofJob(jobId: string): MoveRecord[] {
    return (this.db.prepare('SELECT * FROM moves WHERE job_id = ?').all(jobId) as MoveRow[]).map(moveFromRow);
  }

  get(jobId: string, number: number): MoveRecord | undefined {
    const row = this.db.prepare('SELECT * FROM moves WHERE job_id = ? AND number = ?').get(jobId, number) as
      | MoveRow
      | undefined;
    return row ? moveFromRow(row) : undefined;
  }

  all(): MoveRecord[] {
    return (this.db.prepare('SELECT * FROM moves').all() as MoveRow[]).map(moveFromRow);
  }

  /** Moves whose target is this node: they reserve its capacity. */
  toNode(nodeId: string): MoveRecord[] {
    return (this.db.prepare('SELECT * FROM moves WHERE to_node = ?').all(nodeId) as MoveRow[]).map(
      moveFromRow,
    );
  }

  remove(jobId: string, number: number): void {
    this.db.prepare('DELETE FROM moves WHERE job_id = ? AND number = ?').run(jobId, number);
    this.changes.emit(jobId);
  }
}
