import { randomUUID } from 'node:crypto';
import {
  type Job,
  type JobChange,
  type JobPlan,
  type JobSpec,
  type JobState,
  type JobVersion,
  type Logger,
  type UpdateAction,
  updatePolicyOf,
} from '../../shared/index.js';
import type { CommandOutbox } from '../dispatch/command-outbox.js';
import { conflict, invalid, notFound } from '../errors.js';
import type { OverlayAddresses } from '../network/overlay-addresses.js';
import { pickMoveTarget, placeInstances } from '../scheduler/index.js';
import { definitionAt, type JobRecord, jobDefinition, type Store } from '../store/index.js';
import type { Evaluations } from './evaluations.js';
import { addInstances, newInstance, stopInstance } from './instance-lifecycle.js';
import { countsTowardsReplicas } from './instance-states.js';
import { jobView } from './job-views.js';
import type { Placement } from './placement.js';
import type { Rollouts } from './rollouts.js';
import { changedFields, runsTheSame } from './spec-changes.js';

/** What `PUT /api/jobs/:id` did, with the job as it is now. */
export interface UpdateResult extends JobChange {
  job: Job;
}

export interface JobFilter {
  state?: JobState;
  /** A node's id or name. */
  node?: string;
}

/** What operators do to jobs: create, delete, scale, move. Each is one transaction plus its commands. */
export class JobService {
  constructor(
    private readonly store: Store,
    private readonly outbox: CommandOutbox,
    private readonly placement: Placement,
    private readonly evaluations: Evaluations,
    private readonly addresses: OverlayAddresses,
    private readonly rollouts: Rollouts,
    private readonly logger: Logger,
  ) {}

  /**
   * The job records that pass `filter`; views are built by `views` for the page a client gets, not for every
   * job. `node` (id or name) keeps the jobs with an instance on that node.
   */
  records(filter: JobFilter = {}): JobRecord[] {
    let jobs = this.store.jobs.listJobs();
    if (filter.state !== undefined) jobs = jobs.filter((job) => job.state === filter.state);
    if (filter.node !== undefined) {
      const node = this.store.nodes.find(filter.node);
      if (!node) {
        throw invalid(`unknown node "${filter.node}"`, [
          { path: 'node', message: 'no node has this id or name' },
        ]);
      }
      const onNode = new Set(this.store.jobs.instancesOnNode(node.id).map((instance) => instance.jobId));
      jobs = jobs.filter((job) => onNode.has(job.id));
    }
    return jobs;
  }

  views(jobs: JobRecord[]): Job[] {
    return jobs.map((job) => jobView(this.store, job));
  }

  get(idOrName: string): Job {
    return jobView(this.store, this.find(idOrName));
  }

  /**
   * What creating the job would do now, changing nothing: the scheduler (which books on copies) places its
   * instances on the fleet as it stands. A name a live job holds is a conflict here too.
   */
  plan(spec: JobSpec): JobPlan {
    this.refuseTakenName(spec.name);
    const numbers = Array.from({ length: spec.replicas }, (_, number) => number);
    return { dryRun: true, name: spec.name, instances: this.wouldPlace('dry-run', spec, numbers) };
  }

  /**
   * What updating the job to `spec` would do now, changing nothing: the kind of change, the fields, and where
   * the instances a roll-out adds would go on the fleet as it stands (old ones still in place).
   */
  planUpdate(idOrName: string, spec: JobSpec): JobPlan {
    const job = this.findActive(idOrName);
    this.refuseRename(job, spec);
    const change = this.classify(job, spec);
    const replaced = this.store.jobs
      .instancesOf(job.id)
      .filter((instance) => countsTowardsReplicas(instance.status))
      .filter((instance) => {
        const ran = this.store.versions.specAt(job.id, instance.version) ?? job.spec;
        return !runsTheSame(ran, spec);
      }).length;
    const adds =
      change.action === 'rollout'
        ? Math.min(spec.replicas, updatePolicyOf(spec).maxParallel)
        : Math.max(0, spec.replicas - job.spec.replicas);
    const numbers = Array.from({ length: adds }, (_, number) => number);
    return {
      dryRun: true,
      name: job.name,
      instances: this.wouldPlace(job.id, spec, numbers),
      update: {
        action: change.action,
        changed: change.changed,
        version: change.action === 'rollout' || change.action === 'in-place' ? job.version + 1 : job.version,
        replaced: change.action === 'rollout' ? replaced : 0,
      },
    };
  }

  private wouldPlace(id: string, spec: JobSpec, numbers: number[]): JobPlan['instances'] {
    const result = placeInstances({ id, ...spec }, numbers, this.placement.schedulableNodes());
    const placed = new Map(result.placements.map((placement) => [placement.instance, placement.nodeId]));
    const unplaced = new Map(result.unplaced.map((entry) => [entry.instance, entry.summary]));
    return numbers.map((number) => {
      const nodeId = placed.get(number);
      return nodeId !== undefined
        ? { number, node: this.store.nodes.nameOf(nodeId) }
        : { number, node: null, reason: unplaced.get(number) ?? 'not placed' };
    });
  }

  private refuseTakenName(name: string): void {
    if (this.store.jobs.findLiveJobByName(name)) {
      throw conflict(`a job named "${name}" exists`, [
        { path: 'name', message: 'already used by a live job' },
      ]);
    }
  }

  create(spec: JobSpec, now = Date.now()): Job {
    const job: JobRecord = {
      id: randomUUID(),
      name: spec.name,
      spec,
      state: 'active',
      createdAt: now,
      updatedAt: now,
      serviceIp: null,
      version: 1,
      rollout: null,
    };
    this.store.transaction(() => {
      this.refuseTakenName(spec.name);
      const [serviceIp, ...instanceIps] = this.addresses.take(1 + spec.replicas);
      job.serviceIp = serviceIp!;
      this.store.jobs.insertJob(job);
      this.store.versions.insert(job.id, job.version, spec, now);
      const numbers = Array.from({ length: spec.replicas }, (_, number) => number);
      for (const number of numbers)
        this.store.jobs.insertInstance(newInstance(job, number, instanceIps[number]!, now));
      this.evaluations.evaluate(job, numbers, 'job-registered', now);
      this.store.events.record('job.created', `job ${job.name} created with ${spec.replicas} replica(s)`, {
        jobId: job.id,
      });
      // Its first roll-out: once every instance is healthy, version 1 is stable (what a revert goes back to).
      this.rollouts.begin(this.store.jobs.getJob(job.id)!, 0, now);
    });
    this.outbox.flush();
    this.logger.info({ job: job.id, name: job.name, replicas: spec.replicas }, 'job created');
    return this.get(job.id);
  }

  /**
   * Marks the job `deleting` (its name is free at once) and sends `delete` to every node that was ever told
   * to run it; the job disappears once they all acked, also nodes that were offline when it was deleted.
   */
  remove(idOrName: string, now = Date.now()): Job {
    const job = this.find(idOrName);
    if (job.state === 'deleting') return this.get(job.id);
    this.store.transaction(() => {
      this.store.jobs.setJobState(job.id, 'deleting', now);
      this.rollouts.forget(job.id);
      const generation = this.store.jobs.nextGeneration(job.id);
      const nodes = new Set(this.store.commands.nodesEverCommanded(job.id));
      for (const instance of this.store.jobs.instancesOf(job.id)) {
        if (instance.nodeId) nodes.add(instance.nodeId);
        this.store.jobs.updateInstance({
          ...instance,
          status: instance.nodeId ? 'stopping' : 'stopped',
          updatedAt: now,
        });
      }
      for (const nodeId of nodes) {
        this.outbox.enqueueDelete(nodeId, jobDefinition(job), -1, generation);
      }
      this.store.events.record('job.deleting', `job ${job.name} deleting on ${nodes.size} node(s)`, {
        jobId: job.id,
      });
      if (nodes.size === 0) this.store.jobs.removeJob(job.id);
    });
    this.outbox.flush();
    const remaining = this.store.jobs.getJob(job.id);
    return remaining
      ? this.get(job.id)
      : { ...jobView(this.store, { ...job, state: 'deleting' }), instances: [] };
  }

  /**
   * Scales to `replicas`: up takes the lowest free numbers, each with a new instance IP (409 when the overlay
   * has too few left), down removes instances of older versions first, then the highest-numbered; their IPs are
   * free once their node acks.
   */
  replicate(idOrName: string, replicas: number, now = Date.now()): Job {
    const job = this.findActive(idOrName);
    this.store.transaction(() => this.scale(job, replicas, now));
    this.outbox.flush();
    return this.get(job.id);
  }

  /** Call inside a transaction. */
  private scale(job: JobRecord, replicas: number, now: number): void {
    const live = this.store.jobs
      .instancesOf(job.id)
      .filter((instance) => countsTowardsReplicas(instance.status));
    this.store.jobs.setJobSpec(job.id, { ...job.spec, replicas }, now);
    const updated = this.store.jobs.getJob(job.id)!;
    // New ones run the current version, which is what a roll-out under way brings the others to.
    if (live.length < replicas) {
      addInstances(
        this.store,
        this.addresses,
        this.evaluations,
        updated,
        replicas - live.length,
        'job-scaled',
        now,
      );
    } else if (live.length > replicas) {
      const surplus = [...live]
        .sort(
          (a, b) =>
            Number(a.version === job.version) - Number(b.version === job.version) || b.number - a.number,
        )
        .slice(0, live.length - replicas);
      for (const instance of surplus)
        stopInstance(this.store, this.outbox, updated, instance, 'the instance was scaled away', now);
    }
    this.store.events.record('job.scaled', `job ${job.name} scaled from ${live.length} to ${replicas}`, {
      jobId: job.id,
    });
  }

  /**
   * Applies a full spec to the job (`PUT /api/jobs/:id`, `edgectl apply`): the same spec changes nothing; a new
   * `replicas` alone scales; anything else makes a new version, which rolls out per the job's `update` block
   * (instances that would run the same, as when only `update` or `reschedule` changed, take the new version where
   * they are). The name cannot change.
   */
  update(idOrName: string, spec: JobSpec, now = Date.now()): UpdateResult {
    const job = this.findActive(idOrName);
    this.refuseRename(job, spec);
    const change = this.classify(job, spec);
    if (change.action === 'none') return { job: this.get(job.id), ...change };
    this.store.transaction(() => {
      if (change.action === 'scale') {
        this.scale(job, spec.replicas, now);
        return;
      }
      const version = job.version + 1;
      this.store.versions.insert(job.id, version, spec, now);
      this.store.jobs.setJobVersion(job.id, version, spec, now);
      this.store.events.record(
        'job.updated',
        `job ${job.name} updated to version ${version}: ${change.changed.join(', ')} changed`,
        { jobId: job.id },
      );
      this.rollouts.begin(this.store.jobs.getJob(job.id)!, job.version, now);
    });
    this.outbox.flush();
    this.logger.info({ job: job.id, name: job.name, ...change }, 'job updated');
    return { job: this.get(job.id), ...change };
  }

  /** Every kept version of the job, newest first. */
  versions(idOrName: string): JobVersion[] {
    return this.store.versions.list(this.find(idOrName).id);
  }

  private classify(job: JobRecord, spec: JobSpec): { action: UpdateAction; changed: string[] } {
    const changed = changedFields(job.spec, spec);
    if (changed.length === 0) return { action: 'none', changed };
    if (changed.length === 1 && changed[0] === 'replicas') return { action: 'scale', changed };
    return { action: runsTheSame(job.spec, spec) ? 'in-place' : 'rollout', changed };
  }

  private refuseRename(job: JobRecord, spec: JobSpec): void {
    if (spec.name !== job.name) {
      throw invalid(`a job's name cannot change (it is "${job.name}")`, [
        { path: 'name', message: `must be "${job.name}"` },
      ]);
    }
  }

  /** Make-before-break: the target starts the instance; the source gets `delete` once it runs there. */
  move(idOrName: string, number: number, to: string | undefined, now = Date.now()): Job {
    const job = this.findActive(idOrName);
    this.store.transaction(() => {
      const instance = this.store.jobs.getInstance(job.id, number);
      if (!instance) throw notFound('instance', `${job.name}#${number}`);
      if (!instance.nodeId) throw conflict(`instance ${number} is not placed on any node yet`);
      if (this.store.moves.get(job.id, number))
        throw conflict(`a move of instance ${number} is already in flight`);
      const definition = definitionAt(this.store, job, instance.version);
      const nodes = this.placement.schedulableNodes();
      const target = pickMoveTarget(definition, number, instance.nodeId, nodes, to);
      if (!('nodeId' in target)) {
        throw conflict(
          `cannot move instance ${number}: ${target.summary}`,
          Object.entries(target.reasons).map(([path, message]) => ({ path, message })),
        );
      }
      const generation = this.store.jobs.nextGeneration(job.id);
      this.store.moves.insert({
        jobId: job.id,
        number,
        fromNode: instance.nodeId,
        toNode: target.nodeId,
        generation,
        startedAt: now,
      });
      this.outbox.enqueue(target.nodeId, {
        kind: 'move',
        job: definition,
        instance: number,
        generation,
        worker: [instance.nodeId, target.nodeId],
      });
      this.store.events.record(
        'move.started',
        `move ${job.name}#${number} from ${this.store.nodes.nameOf(instance.nodeId)} to ${this.store.nodes.nameOf(target.nodeId)}`,
        {
          jobId: job.id,
          nodeId: target.nodeId,
        },
      );
    });
    this.outbox.flush();
    return this.get(job.id);
  }

  private find(idOrName: string): JobRecord {
    const job = this.store.jobs.findJob(idOrName);
    if (!job) throw notFound('job', idOrName);
    return job;
  }

  private findActive(idOrName: string): JobRecord {
    const job = this.find(idOrName);
    if (job.state !== 'active') throw conflict(`job ${job.name} is being deleted`);
    return job;
  }
}
