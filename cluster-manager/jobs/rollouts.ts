import { type Logger, type Rollout, type UpdatePolicy, updatePolicyOf } from '../../shared/index.js';
import type { CommandOutbox } from '../dispatch/command-outbox.js';
import type { OverlayAddresses } from '../network/overlay-addresses.js';
import { placeInstances, withoutInstance } from '../scheduler/index.js';
import {
  definitionAt,
  type InstanceRecord,
  type JobRecord,
  jobDefinition,
  type Store,
} from '../store/index.js';
import type { Evaluations } from './evaluations.js';
import { addInstances, stopInstance } from './instance-lifecycle.js';
import type { Placement } from './placement.js';
import { planRolloutStep } from './rollout-plan.js';
import { runsTheSame } from './spec-changes.js';

/** How long instance changes are gathered before the jobs they touch take a step. */
const GATHER_MS = 50;
/** How often every job with a roll-out under way takes a step anyway (minimum healthy times, deadlines). */
const TICK_MS = 1000;

/**
 * Drives each job to its current version, one step at a time (`planRolloutStep` decides, this carries it
 * out): new instances are added and placed, old ones stopped, a failed roll-out reverted to the last stable
 * version. A job takes a step when it starts rolling, when its instances change (gathered for GATHER_MS), and
 * every TICK_MS while it rolls. Everything a step decides is in the store, so a cluster manager that restarts
 * picks each roll-out up where it was.
 */
export class Rollouts {
  /** Jobs whose roll-out is `running`. */
  private readonly rolling = new Set<string>();
  private readonly dirty = new Set<string>();
  private soon: NodeJS.Timeout | undefined;
  private tick: NodeJS.Timeout | undefined;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly store: Store,
    private readonly outbox: CommandOutbox,
    private readonly placement: Placement,
    private readonly evaluations: Evaluations,
    private readonly addresses: OverlayAddresses,
    private readonly logger: Logger,
  ) {
    for (const job of store.jobs.listJobs())
      if (job.state === 'active' && job.rollout?.state === 'running') this.rolling.add(job.id);
    this.unsubscribe = store.jobs.changes.subscribe((jobId) => {
      if (!this.rolling.has(jobId)) return;
      this.dirty.add(jobId);
      this.soon ??= setTimeout(() => this.process(), GATHER_MS);
    });
  }

  start(): void {
    this.tick ??= setInterval(() => {
      for (const jobId of this.rolling) this.dirty.add(jobId);
      this.process();
    }, TICK_MS);
    this.tick.unref();
  }

  stop(): void {
    this.unsubscribe();
    clearInterval(this.tick);
    clearTimeout(this.soon);
    this.tick = undefined;
    this.soon = undefined;
  }

  /**
   * Starts rolling the job to its current version (`from` is the version it leaves; 0 for a new job). Call inside
   * the transaction that made the version. A roll-out under way is superseded. Instances whose version runs the
   * same as the new one (only `replicas`, `update`, `reschedule` or `disconnect` changed, or a revert to what
   * they run) take the new version where they are.
   */
  begin(job: JobRecord, from: number, now: number, revertOf?: number): void {
    const previous = job.rollout;
    if (previous?.state === 'running') {
      this.store.events.record(
        'rollout.superseded',
        `job ${job.name} version ${previous.version} superseded by version ${job.version}`,
        { jobId: job.id },
      );
    }
    for (const instance of this.store.jobs.instancesOf(job.id)) {
      if (instance.version === job.version) continue;
      const spec = this.store.versions.specAt(job.id, instance.version);
      if (spec && runsTheSame(spec, job.spec))
        this.store.jobs.updateInstance({ ...instance, version: job.version, versionSince: now });
    }
    const rollout: Rollout = {
      version: job.version,
      from,
      state: 'running',
      ...(revertOf !== undefined ? { revertOf } : {}),
      startedAt: now,
      updatedAt: now,
      // While it runs, views say how far it is (rolloutProgress); the store is written when it ends.
      detail: 'running',
    };
    this.store.jobs.setRollout(job.id, rollout);
    this.rolling.add(job.id);
    this.step(job.id, now);
  }

  /** A job stopped rolling because it is being deleted. */
  forget(jobId: string): void {
    this.rolling.delete(jobId);
  }

  /** Takes a step for every job that changed (the timer's work; public for tests). */
  process(now = Date.now()): void {
    clearTimeout(this.soon);
    this.soon = undefined;
    if (this.dirty.size === 0) return;
    const jobs = [...this.dirty];
    this.dirty.clear();
    try {
      this.store.transaction(() => {
        for (const jobId of jobs) this.step(jobId, now);
      });
    } catch (error) {
      // Rolled back whole: the jobs are looked at again at the next tick.
      for (const jobId of jobs) this.rolling.add(jobId);
      this.logger.error({ err: (error as Error).message }, 'roll-out step failed');
    }
    this.outbox.flush();
  }

  /** One step of the job's roll-out. Call inside a transaction. */
  private step(jobId: string, now: number): void {
    const job = this.store.jobs.getJob(jobId);
    const rollout = job?.rollout;
    if (job?.state !== 'active' || rollout?.state !== 'running' || rollout.version !== job.version) {
      this.rolling.delete(jobId);
      return;
    }
    const policy = updatePolicyOf(job.spec);
    const instances = this.store.jobs.instancesOf(job.id);
    const step = planRolloutStep(job.version, job.spec.replicas, policy, instances, now);
    if (step.outcome === 'succeeded') {
      this.finish(job, rollout, 'succeeded', `all ${job.spec.replicas} instance(s) healthy`, now);
      this.store.versions.markStable(job.id, job.version);
      this.store.events.record(
        'rollout.succeeded',
        `job ${job.name} version ${job.version} rolled out: ${job.spec.replicas} healthy`,
        { jobId: job.id },
      );
      this.store.versions.prune(job.id, job.version, new Set([job.version]));
      return;
    }
    if (step.outcome === 'failed') {
      this.fail(job, rollout, step.failure ?? 'failed', policy, now);
      return;
    }
    const byNumber = new Map(instances.map((instance) => [instance.number, instance]));
    for (const number of step.stop) {
      const instance = byNumber.get(number)!;
      stopInstance(this.store, this.outbox, job, instance, 'replaced by a new version', now);
    }
    this.makeRoom(job, step.unplaced, step.roomFrom, byNumber, now);
    if (step.start > 0) {
      try {
        addInstances(this.store, this.addresses, this.evaluations, job, step.start, 'job-updated', now);
      } catch (error) {
        // No instance IP left: the step is taken again once one is free.
        this.logger.warn({ job: job.name, err: (error as Error).message }, 'roll-out cannot add instances');
      }
    }
  }

  /**
   * Break-before-make, only where it helps: for each new instance no node has room for, the first old instance
   * whose leaving would make room for it (on its node) is stopped.
   */
  private makeRoom(
    job: JobRecord,
    unplaced: number[],
    roomFrom: number[],
    byNumber: Map<number, InstanceRecord>,
    now: number,
  ): void {
    if (unplaced.length === 0) return;
    const definition = jobDefinition(job);
    const nodes = this.placement.schedulableNodesById();
    const candidates = [...roomFrom];
    for (const number of unplaced) {
      const at = candidates.findIndex((candidate) => {
        const old = byNumber.get(candidate)!;
        const node = nodes.get(old.nodeId!);
        if (!node) return false;
        const freed = withoutInstance(definitionAt(this.store, job, old.version), node);
        return placeInstances(definition, [number], [freed]).placements.length === 1;
      });
      if (at < 0) continue;
      const [candidate] = candidates.splice(at, 1);
      const old = byNumber.get(candidate!)!;
      stopInstance(this.store, this.outbox, job, old, 'making room for a new version', now);
      this.store.events.record(
        'rollout.room',
        `${job.name}#${old.number} stopped first to make room for #${number} (no node had room for both)`,
        { jobId: job.id, nodeId: old.nodeId ?? undefined },
      );
    }
  }

  private fail(job: JobRecord, rollout: Rollout, why: string, policy: UpdatePolicy, now: number): void {
    this.finish(job, rollout, 'failed', why, now);
    this.store.events.record('rollout.failed', `job ${job.name} version ${job.version} failed: ${why}`, {
      jobId: job.id,
    });
    // A revert that fails too is left as it is: going back again would loop between two versions.
    if (!policy.autoRevert || rollout.revertOf !== undefined) return;
    const stable = this.store.versions.latestStable(job.id, job.version);
    if (!stable) {
      this.store.events.record(
        'rollout.failed',
        `job ${job.name}: no earlier version ran healthy, nothing to revert to`,
        { jobId: job.id },
      );
      return;
    }
    // A revert is a new version with the stable one's spec, at today's replica count (as `kubectl rollout undo`).
    const version = job.version + 1;
    const spec = { ...stable.spec, replicas: job.spec.replicas };
    this.store.versions.insert(job.id, version, spec, now);
    this.store.jobs.setJobVersion(job.id, version, spec, now);
    this.store.events.record(
      'rollout.reverting',
      `job ${job.name} reverting to version ${stable.version} (as version ${version})`,
      { jobId: job.id },
    );
    const reverted = this.store.jobs.getJob(job.id)!;
    this.begin(reverted, job.version, now, job.version);
  }

  private finish(
    job: JobRecord,
    rollout: Rollout,
    state: Rollout['state'],
    detail: string,
    now: number,
  ): void {
    this.store.jobs.setRollout(job.id, { ...rollout, state, detail, updatedAt: now });
    this.rolling.delete(job.id);
  }
}

/**
 * How far a running roll-out is, in words, as of now (`2 of 3 new healthy, 1 old left`): worked out when a view
 * is made, so that a roll-out's progress costs no write per instance change.
 */
export function rolloutProgress(store: Store, job: JobRecord, now = Date.now()): string {
  const policy = updatePolicyOf(job.spec);
  return planRolloutStep(job.version, job.spec.replicas, policy, store.jobs.instancesOf(job.id), now)
    .progress;
}
