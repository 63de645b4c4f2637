import type {
  HealthState,
  Instance,
  InstanceStatus,
  JobDefinition,
  JobSpec,
  JobState,
  Rollout,
} from '../../shared/index.js';
import { ipToNumber, isIpv4 } from '../../shared/index.js';
import { ChangeFeed } from './change-feed.js';
import type { Db } from './database.js';
import type { Indexed, UndoLog } from './undo-log.js';

export interface JobRecord {
  id: string;
  name: string;
  spec: JobSpec;
  state: JobState;
  createdAt: number;
  updatedAt: number;
  serviceIp: string | null;
  /** The version `spec` is: what the job rolls to. */
  version: number;
  /** The latest roll-out (the first placement included); null for jobs from before versions. */
  rollout: Rollout | null;
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
  /** When it was placed again after failing, within its reschedule policy's interval (oldest first). */
  reschedules: number[];
  /** The job version it runs, and since when (created for it, or found to run it unchanged). */
  version: number;
  versionSince: number;
  /** What its health check says while it runs (null: no check, or not running). */
  health: HealthState | null;
  /** Since when it has been running and healthy, as the cluster manager heard it (null: it is not). */
  healthySince: number | null;
}

interface JobRow {
  id: string;
  name: string;
  spec: string;
  state: JobState;
  created_at: number;
  updated_at: number;
  service_ip: string | null;
  version: number;
  rollout: string | null;
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
  reschedules: string;
  version: number;
  version_since: number;
  health: HealthState | null;
  healthy_since: number | null;
}

const jobFromRow = (row: JobRow): JobRecord => ({
  id: row.id,
  name: row.name,
  spec: JSON.parse(row.spec) as JobSpec,
  state: row.state,
  createdAt: row.created_at,
  updatedAt: row.updated_at,
  serviceIp: row.service_ip,
  version: row.version,
  rollout: row.rollout === null ? null : (JSON.parse(row.rollout) as Rollout),
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
  reschedules: JSON.parse(row.reschedules) as number[],
  version: row.version,
  versionSince: row.version_since,
  health: row.health,
  healthySince: row.healthy_since,
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
    version: instance.version,
    ...(instance.health !== null ? { health: instance.health } : {}),
    ...(instance.instanceIp ? { instanceIp: instance.instanceIp } : {}),
    ...(instance.namespaceIp ? { namespaceIp: instance.namespaceIp } : {}),
    ...(instance.startedAt !== null ? { startedAt: instance.startedAt } : {}),
    ...(instance.exitCode !== null ? { exitCode: instance.exitCode } : {}),
    updatedAt: instance.updatedAt,
  };
}

const instanceKey = (jobId: string, number: number) => `${jobId}\u0000${number}`;

const byNumber = (a: InstanceRecord, b: InstanceRecord) => a.number - b.number;
const byJobThenNumber = (a: InstanceRecord, b: InstanceRecord) =>
  a.jobId < b.jobId ? -1 : a.jobId > b.jobId ? 1 : a.number - b.number;

/** A map of maps: add, remove, and the inner map (empty ones are dropped). */
class Grouped<V> {
  private readonly groups = new Map<string, Map<string, V>>();

  add(group: string, key: string, value: V): void {
    let inner = this.groups.get(group);
    if (!inner) {
      inner = new Map();
      this.groups.set(group, inner);
    }
    inner.set(key, value);
  }

  remove(group: string, key: string): void {
    const inner = this.groups.get(group);
    if (!inner) return;
    inner.delete(key);
    if (inner.size === 0) this.groups.delete(group);
  }

  values(group: string): V[] {
    const inner = this.groups.get(group);
    return inner ? [...inner.values()] : [];
  }

  /** Each non-empty group with how many it holds. */
  *sizes(): IterableIterator<[string, number]> {
    for (const [group, inner] of this.groups) yield [group, inner.size];
  }
}

/**
 * Jobs and their instances, held in memory with the indexes every decision needs (by job, by node, by status,
 * by overlay address) and written through to SQLite: SQLite first (its constraints may refuse), then the maps,
 * with each map change recorded in the undo log so that a transaction that rolls back leaves memory as it was.
 * Loaded once when the store opens. Records handed out are shared: callers copy before they change one.
 */
export class JobStore {
  /** Ids of jobs whose row or instance rows were written (inserted, updated or removed). */
  readonly changes = new ChangeFeed();
  /** Ids of jobs whose row was deleted (SQLite deleted their instances and moves with it). */
  readonly removed = new ChangeFeed();
  private readonly jobs = new Map<string, JobRecord>();
  private readonly generations = new Map<string, number>();
  private readonly liveByName = new Map<string, string>();
  private readonly byServiceIp = new Map<string, string>();
  private readonly instances = new Grouped<InstanceRecord>();
  private readonly onNode = new Grouped<InstanceRecord>();
  private readonly withStatus = new Grouped<InstanceRecord>();
  private readonly byInstanceIp = new Map<string, InstanceRecord>();
  /** Every service and instance IP held, as numbers: what the address allocator must not hand out. */
  private readonly addressNumbers = new Set<number>();
  private readonly byKey = new Map<string, InstanceRecord>();

  constructor(
    private readonly db: Db,
    private readonly undo: UndoLog,
  ) {
    const jobs = db.prepare('SELECT * FROM jobs').all() as (JobRow & { last_generation: number })[];
    for (const row of jobs) {
      this.putJob(jobFromRow(row));
      this.generations.set(row.id, row.last_generation);
    }
    for (const row of db.prepare('SELECT * FROM instances').all() as InstanceRow[])
      this.putInstance(instanceFromRow(row));
  }

  insertJob(job: JobRecord): void {
    this.db
      .prepare(
        `INSERT INTO jobs (id, name, spec, state, created_at, updated_at, service_ip, version, rollout)
         VALUES (@id, @name, @spec, @state, @createdAt, @updatedAt, @serviceIp, @version, @rollout)`,
      )
      .run({
        ...job,
        spec: JSON.stringify(job.spec),
        rollout: job.rollout === null ? null : JSON.stringify(job.rollout),
      });
    this.changeJob(job.id, { ...job });
    this.setGeneration(job.id, 0);
  }

  getJob(id: string): JobRecord | undefined {
    return this.jobs.get(id);
  }

  /** A job id first, else a live job's name. */
  findJob(idOrName: string): JobRecord | undefined {
    return this.getJob(idOrName) ?? this.findLiveJobByName(idOrName);
  }

  findLiveJobByName(name: string): JobRecord | undefined {
    const id = this.liveByName.get(name);
    return id === undefined ? undefined : this.jobs.get(id);
  }

  listJobs(): JobRecord[] {
    return [...this.jobs.values()].sort((a, b) =>
      a.createdAt !== b.createdAt ? a.createdAt - b.createdAt : a.id < b.id ? -1 : a.id > b.id ? 1 : 0,
    );
  }

  setJobState(id: string, state: JobState, now: number): void {
    this.db.prepare('UPDATE jobs SET state = ?, updated_at = ? WHERE id = ?').run(state, now, id);
    this.patchJob(id, { state, updatedAt: now });
  }

  setJobSpec(id: string, spec: JobSpec, now: number): void {
    this.db
      .prepare('UPDATE jobs SET spec = ?, updated_at = ? WHERE id = ?')
      .run(JSON.stringify(spec), now, id);
    this.patchJob(id, { spec, updatedAt: now });
  }

  /** A new version of the spec becomes the job's (its row in job_versions is the caller's). */
  setJobVersion(id: string, version: number, spec: JobSpec, now: number): void {
    this.db
      .prepare('UPDATE jobs SET spec = ?, version = ?, updated_at = ? WHERE id = ?')
      .run(JSON.stringify(spec), version, now, id);
    this.patchJob(id, { spec, version, updatedAt: now });
  }

  setRollout(id: string, rollout: Rollout): void {
    this.db.prepare('UPDATE jobs SET rollout = ? WHERE id = ?').run(JSON.stringify(rollout), id);
    this.patchJob(id, { rollout });
  }

  /** Generations are monotonic per job, so a number reused after a scale-down never looks stale to a node. */
  nextGeneration(jobId: string): number {
    const generation = this.lastGeneration(jobId) + 1;
    this.db.prepare('UPDATE jobs SET last_generation = ? WHERE id = ?').run(generation, jobId);
    this.setGeneration(jobId, generation);
    return generation;
  }

  lastGeneration(jobId: string): number {
    return this.generations.get(jobId) ?? 0;
  }

  removeJob(id: string): void {
    this.db.prepare('DELETE FROM jobs WHERE id = ?').run(id);
    for (const instance of this.instances.values(id)) this.changeInstance(id, instance.number, undefined);
    this.changeJob(id, undefined);
    this.setGeneration(id, undefined);
    this.removed.emit(id);
  }

  setServiceIp(id: string, serviceIp: string): void {
    this.db.prepare('UPDATE jobs SET service_ip = ? WHERE id = ?').run(serviceIp, id);
    this.patchJob(id, { serviceIp });
  }

  /**
   * Every service and instance IP held by a job row or an instance row (they share one pool), as numbers, kept as
   * rows change: the allocator reads it on every job posted.
   */
  usedAddressNumbers(): ReadonlySet<number> {
    return this.addressNumbers;
  }

  /** The live job whose service IP, or one of whose instances' instance IP, is `ip`. */
  findLiveJobByAddress(ip: string): JobRecord | undefined {
    const jobId = this.byServiceIp.get(ip) ?? this.byInstanceIp.get(ip)?.jobId;
    const job = jobId === undefined ? undefined : this.jobs.get(jobId);
    return job?.state === 'active' ? job : undefined;
  }

  insertInstance(instance: InstanceRecord): void {
    this.db
      .prepare(
        `INSERT INTO instances (job_id, number, node_id, status, detail, container_id, generation, restarts,
           started_at, exit_code, updated_at, instance_ip, namespace_ip, reschedules, version, version_since,
           health, healthy_since)
         VALUES (@jobId, @number, @nodeId, @status, @detail, @containerId, @generation, @restarts,
           @startedAt, @exitCode, @updatedAt, @instanceIp, @namespaceIp, @reschedules, @version, @versionSince,
           @health, @healthySince)`,
      )
      .run({ ...instance, reschedules: JSON.stringify(instance.reschedules) });
    this.changeInstance(instance.jobId, instance.number, { ...instance });
  }

  updateInstance(instance: InstanceRecord): void {
    const result = this.db
      .prepare(
        `UPDATE instances SET node_id = @nodeId, status = @status, detail = @detail, container_id = @containerId,
           generation = @generation, restarts = @restarts, started_at = @startedAt, exit_code = @exitCode,
           updated_at = @updatedAt, instance_ip = @instanceIp, namespace_ip = @namespaceIp,
           reschedules = @reschedules, version = @version, version_since = @versionSince, health = @health,
           healthy_since = @healthySince
         WHERE job_id = @jobId AND number = @number`,
      )
      .run({ ...instance, reschedules: JSON.stringify(instance.reschedules) });
    if (result.changes > 0) this.changeInstance(instance.jobId, instance.number, { ...instance });
  }

  removeInstance(jobId: string, number: number): void {
    this.db.prepare('DELETE FROM instances WHERE job_id = ? AND number = ?').run(jobId, number);
    this.changeInstance(jobId, number, undefined);
  }

  getInstance(jobId: string, number: number): InstanceRecord | undefined {
    return this.byKey.get(instanceKey(jobId, number));
  }

  instancesOf(jobId: string): InstanceRecord[] {
    return this.instances.values(jobId).sort(byNumber);
  }

  instancesOnNode(nodeId: string): InstanceRecord[] {
    return this.onNode.values(nodeId).sort(byJobThenNumber);
  }

  /** How many instances there are in each status (for metrics), from the status index. */
  countByStatus(): { status: InstanceStatus; count: number }[] {
    return [...this.withStatus.sizes()].map(([status, count]) => ({
      status: status as InstanceStatus,
      count,
    }));
  }

  /** Instances in one status (failover looks at `lost` and `failed` every second). */
  instancesWithStatus(status: InstanceStatus): InstanceRecord[] {
    return this.withStatus.values(status);
  }

  allInstances(): InstanceRecord[] {
    return [...this.byKey.values()];
  }

  private patchJob(id: string, change: Partial<JobRecord>): void {
    const job = this.jobs.get(id);
    if (job) this.changeJob(id, { ...job, ...change });
  }

  /** Replaces (or with undefined removes) a job in memory, with its undo, and tells the change feed. */
  private changeJob(id: string, job: JobRecord | undefined): void {
    this.undo.swap(this.jobs.get(id), job, this.jobIndex, () => this.changes.emit(id));
  }

  private readonly jobIndex: Indexed<JobRecord> = {
    put: (job) => this.putJob(job),
    drop: (job) => this.dropJob(job),
  };

  private putJob(job: JobRecord): void {
    this.jobs.set(job.id, job);
    if (job.state === 'active') this.liveByName.set(job.name, job.id);
    if (job.serviceIp) {
      this.byServiceIp.set(job.serviceIp, job.id);
      this.holdAddress(job.serviceIp);
    }
  }

  private dropJob(job: JobRecord | undefined): void {
    if (!job) return;
    this.jobs.delete(job.id);
    if (this.liveByName.get(job.name) === job.id) this.liveByName.delete(job.name);
    if (job.serviceIp && this.byServiceIp.get(job.serviceIp) === job.id) {
      this.byServiceIp.delete(job.serviceIp);
      this.releaseAddress(job.serviceIp);
    }
  }

  private holdAddress(ip: string): void {
    if (isIpv4(ip)) this.addressNumbers.add(ipToNumber(ip));
  }

  private releaseAddress(ip: string): void {
    if (isIpv4(ip)) this.addressNumbers.delete(ipToNumber(ip));
  }

  private setGeneration(jobId: string, generation: number | undefined): void {
    const previous = this.generations.get(jobId);
    if (generation === undefined) this.generations.delete(jobId);
    else this.generations.set(jobId, generation);
    this.undo.record(() => {
      if (previous === undefined) this.generations.delete(jobId);
      else this.generations.set(jobId, previous);
    });
  }

  /** Replaces (or with undefined removes) an instance in memory, with its undo, and tells the change feed. */
  private changeInstance(jobId: string, number: number, instance: InstanceRecord | undefined): void {
    const previous = this.byKey.get(instanceKey(jobId, number));
    this.undo.swap(previous, instance, this.instanceIndex, () => this.changes.emit(jobId));
  }

  private readonly instanceIndex: Indexed<InstanceRecord> = {
    put: (instance) => this.putInstance(instance),
    drop: (instance) => this.dropInstance(instance),
  };

  private putInstance(instance: InstanceRecord): void {
    const key = instanceKey(instance.jobId, instance.number);
    this.byKey.set(key, instance);
    this.instances.add(instance.jobId, key, instance);
    if (instance.nodeId !== null) this.onNode.add(instance.nodeId, key, instance);
    this.withStatus.add(instance.status, key, instance);
    if (instance.instanceIp) {
      this.byInstanceIp.set(instance.instanceIp, instance);
      this.holdAddress(instance.instanceIp);
    }
  }

  private dropInstance(instance: InstanceRecord | undefined): void {
    if (!instance) return;
    const key = instanceKey(instance.jobId, instance.number);
    this.byKey.delete(key);
    this.instances.remove(instance.jobId, key);
    if (instance.nodeId !== null) this.onNode.remove(instance.nodeId, key);
    this.withStatus.remove(instance.status, key);
    if (instance.instanceIp && this.byInstanceIp.get(instance.instanceIp) === instance) {
      this.byInstanceIp.delete(instance.instanceIp);
      this.releaseAddress(instance.instanceIp);
    }
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
  private readonly byKey = new Map<string, MoveRecord>();
  private readonly ofJobs = new Grouped<MoveRecord>();
  private readonly toNodes = new Grouped<MoveRecord>();

  constructor(
    private readonly db: Db,
    private readonly undo: UndoLog,
  ) {
    for (const row of db.prepare('SELECT * FROM moves').all() as MoveRow[]) this.put(moveFromRow(row));
  }

  insert(move: MoveRecord): void {
    this.db
      .prepare(
        `INSERT INTO moves (job_id, number, from_node, to_node, generation, started_at)
         VALUES (@jobId, @number, @fromNode, @toNode, @generation, @startedAt)`,
      )
      .run(move);
    this.change(move.jobId, move.number, { ...move });
  }

  ofJob(jobId: string): MoveRecord[] {
    return this.ofJobs.values(jobId);
  }

  /** The job's row was deleted, and SQLite deleted its moves with it (ON DELETE CASCADE): forget them too. */
  forgetJob(jobId: string): void {
    for (const move of this.ofJobs.values(jobId)) this.change(jobId, move.number, undefined);
  }

  get(jobId: string, number: number): MoveRecord | undefined {
    return this.byKey.get(instanceKey(jobId, number));
  }

  all(): MoveRecord[] {
    return [...this.byKey.values()];
  }

  /** Moves whose target is this node: they reserve its capacity. */
  toNode(nodeId: string): MoveRecord[] {
    return this.toNodes.values(nodeId);
  }

  remove(jobId: string, number: number): void {
    this.db.prepare('DELETE FROM moves WHERE job_id = ? AND number = ?').run(jobId, number);
    this.change(jobId, number, undefined);
  }

  private change(jobId: string, number: number, move: MoveRecord | undefined): void {
    this.undo.swap(this.byKey.get(instanceKey(jobId, number)), move, this.index, () =>
      this.changes.emit(jobId),
    );
  }

  private readonly index: Indexed<MoveRecord> = {
    put: (move) => this.put(move),
    drop: (move) => this.drop(move),
  };

  private put(move: MoveRecord): void {
    const key = instanceKey(move.jobId, move.number);
    this.byKey.set(key, move);
    this.ofJobs.add(move.jobId, key, move);
    this.toNodes.add(move.toNode, key, move);
  }

  private drop(move: MoveRecord | undefined): void {
    if (!move) return;
    const key = instanceKey(move.jobId, move.number);
    this.byKey.delete(key);
    this.ofJobs.remove(move.jobId, key);
    this.toNodes.remove(move.toNode, key);
  }
}
