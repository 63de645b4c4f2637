import { randomUUID } from 'node:crypto';
import type { Job, JobSpec, JobState, Logger } from '../../shared/index.js';
import type { CommandOutbox } from '../dispatch/command-outbox.js';
import { conflict, invalid, notFound } from '../errors.js';
import type { OverlayAddresses } from '../network/overlay-addresses.js';
import { pickMoveTarget, placeInstances } from '../scheduler/index.js';
import { type InstanceRecord, type JobRecord, jobDefinition, type Store } from '../store/index.js';
import type { Evaluations } from './evaluations.js';
import { countsTowardsReplicas, transition } from './instance-states.js';
import { jobView } from './job-views.js';
import { abandonMove } from './moves.js';
import type { Placement } from './placement.js';

/** What `POST /api/jobs?dryRun=true` answers: where each instance would go, or why it could not. */
export interface JobPlan {
  dryRun: true;
  name: string;
  instances: { number: number; node: string | null; reason?: string }[];
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

  /** A job gets its service IP and every instance its instance IP here, or the job is refused whole (409). */
  /**
   * What creating the job would do now, changing nothing: the scheduler (which books on copies) places its
   * instances on the fleet as it stands. A name a live job holds is a conflict here too.
   */
  plan(spec: JobSpec): JobPlan {
    this.refuseTakenName(spec.name);
    const numbers = Array.from({ length: spec.replicas }, (_, number) => number);
    const result = placeInstances({ id: 'dry-run', ...spec }, numbers, this.placement.schedulableNodes());
    const placed = new Map(result.placements.map((placement) => [placement.instance, placement.nodeId]));
    const unplaced = new Map(result.unplaced.map((entry) => [entry.instance, entry.summary]));
    return {
      dryRun: true,
      name: spec.name,
      instances: numbers.map((number) => {
        const nodeId = placed.get(number);
        return nodeId !== undefined
          ? { number, node: this.store.nodes.nameOf(nodeId) }
          : { number, node: null, reason: unplaced.get(number) ?? 'not placed' };
      }),
    };
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
    };
    this.store.transaction(() => {
      this.refuseTakenName(spec.name);
      const [serviceIp, ...instanceIps] = this.addresses.take(1 + spec.replicas);
      job.serviceIp = serviceIp!;
      this.store.jobs.insertJob(job);
      const numbers = Array.from({ length: spec.replicas }, (_, number) => number);
      for (const number of numbers)
        this.store.jobs.insertInstance(newInstance(job.id, number, instanceIps[number]!, now));
      this.evaluations.evaluate(job, numbers, 'job-registered', now);
      this.store.events.record('job.created', `job ${job.name} created with ${spec.replicas} replica(s)`, {
        jobId: job.id,
      });
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
   * has too few left), down removes the highest-numbered instances; their IPs are free once their node acks.
   */
  replicate(idOrName: string, replicas: number, now = Date.now()): Job {
    const job = this.findActive(idOrName);
    this.store.transaction(() => {
      const instances = this.store.jobs.instancesOf(job.id);
      const live = instances.filter((instance) => countsTowardsReplicas(instance.status));
      const updated: JobRecord = { ...job, spec: { ...job.spec, replicas }, updatedAt: now };
      this.store.jobs.setJobSpec(job.id, updated.spec, now);
      if (live.length < replicas) {
        const taken = new Set(instances.map((instance) => instance.number));
        const numbers: number[] = [];
        for (let number = 0; numbers.length < replicas - live.length; number++) {
          if (!taken.has(number)) numbers.push(number);
        }
        const instanceIps = this.addresses.take(numbers.length);
        for (const [index, number] of numbers.entries())
          this.store.jobs.insertInstance(newInstance(job.id, number, instanceIps[index]!, now));
        this.evaluations.evaluate(updated, numbers, 'job-scaled', now);
      } else {
        const surplus = [...live].sort((a, b) => b.number - a.number).slice(0, live.length - replicas);
        for (const instance of surplus) this.stopInstance(updated, instance, now);
      }
      this.store.events.record('job.scaled', `job ${job.name} scaled from ${live.length} to ${replicas}`, {
        jobId: job.id,
      });
    });
    this.outbox.flush();
    return this.get(job.id);
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
      const definition = jobDefinition(job);
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

  /**
   * Sends `delete` for one instance; it disappears when its node acks. Unplaced ones go at once. A move of it
   * under way is given up first, so that its target removes the copy it may already run.
   */
  private stopInstance(job: JobRecord, instance: InstanceRecord, now: number): void {
    if (!instance.nodeId) {
      this.store.jobs.removeInstance(job.id, instance.number);
      return;
    }
    const move = this.store.moves.get(job.id, instance.number);
    if (move) abandonMove(this.store, this.outbox, job, move, 'the instance was scaled away');
    const next = transition(instance.status, { kind: 'stopAsked' });
    if ('status' in next)
      this.store.jobs.updateInstance({ ...instance, status: next.status, updatedAt: now });
    this.outbox.enqueueDelete(instance.nodeId, jobDefinition(job), instance.number, instance.generation);
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

function newInstance(jobId: string, number: number, instanceIp: string, now: number): InstanceRecord {
  return {
    jobId,
    number,
    nodeId: null,
    status: 'pending',
    detail: 'waiting for placement',
    containerId: null,
    generation: 0,
    restarts: 0,
    startedAt: null,
    exitCode: null,
    updatedAt: now,
    instanceIp,
    namespaceIp: null,
    reschedules: [],
  };
}
