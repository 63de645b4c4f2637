import type { Command } from '../shared/command.js';

/** Command ids remembered per worker for deduplication; the oldest fall off first. */
const PROCESSED_LIMIT = 1000;
/** Tombstones kept per worker; the oldest are forgotten first. */
const TOMBSTONE_LIMIT = 1000;
/** What one hollow instance "uses", as `jobs/resources` reports it. */
const INSTANCE_CPU_PERCENT = 0.5;
const INSTANCE_MEMORY_BYTES = 8 * 1024 * 1024;

/**
 * One instance a hollow worker pretends to run. `removed` is a tombstone: it keeps a redelivered or older
 * deploy of that instance out, as the node engine's desired state does.
 */
export interface HollowInstance {
  jobId: string;
  number: number;
  generation: number;
  status: 'creating' | 'running' | 'removed';
  containerId: string;
  startedAt?: number;
  /** The command's `issuedAt`: the start of its round trip. */
  issuedAt: number;
}

/** What applying a command did; the worker acks every one and reports what changed. */
export type Outcome =
  | { kind: 'start'; instance: HollowInstance }
  | { kind: 'stopped'; instances: HollowInstance[] }
  | { kind: 'unchanged' }
  | { kind: 'stale'; reason: string }
  | { kind: 'duplicate' };

function keyOf(jobId: string, number: number): string {
  return `${jobId}/${number}`;
}

/**
 * A hollow worker's instances, in memory only, with the node engine's rules for commands: dedup by command id,
 * an older generation than the one held is ignored, a tombstone at a generation wins over a deploy at the same
 * generation, `delete` with instance -1 removes every instance of the job up to the command's generation.
 */
export class HollowInstances {
  private readonly instances = new Map<string, HollowInstance>();
  private readonly processed = new Set<string>();
  private readonly jobTombstones = new Map<string, number>();
  private tombstones = 0;
  private summaries: string | undefined = '[]';
  private resources: string | undefined = '[]';
  running = 0;

  apply(command: Command): Outcome {
    if (this.processed.has(command.id)) return { kind: 'duplicate' };
    this.remember(command.id);
    if (command.command === 'delete') {
      return command.instance === -1 ? this.deleteJob(command) : this.deleteInstance(command);
    }
    if (command.instance < 0) return { kind: 'stale', reason: `instance ${command.instance} cannot be run` };
    const tombstone = this.jobTombstones.get(command.job.id);
    if (tombstone !== undefined && command.generation <= tombstone) {
      return { kind: 'stale', reason: `job deleted at generation ${tombstone}` };
    }
    const key = keyOf(command.job.id, command.instance);
    const current = this.instances.get(key);
    if (current) {
      if (command.generation < current.generation) {
        return {
          kind: 'stale',
          reason: `generation ${command.generation} is older than ${current.generation}`,
        };
      }
      if (command.generation === current.generation) {
        return current.status === 'removed'
          ? { kind: 'stale', reason: `generation ${command.generation} was already deleted` }
          : { kind: 'unchanged' };
      }
    }
    const instance: HollowInstance = {
      jobId: command.job.id,
      number: command.instance,
      generation: command.generation,
      status: 'creating',
      containerId: `hollow-${command.job.name}-${command.instance}-${command.generation}`,
      issuedAt: command.issuedAt,
    };
    this.put(key, instance, current);
    return { kind: 'start', instance };
  }

  /** Whether `instance` is still the one held for its number (not replaced, not deleted since). */
  holds(instance: HollowInstance): boolean {
    return this.instances.get(keyOf(instance.jobId, instance.number)) === instance;
  }

  markRunning(instance: HollowInstance, now: number): void {
    instance.status = 'running';
    instance.startedAt = now;
    this.running++;
    this.changed();
  }

  /** Every instance it runs or starts, for the status reports sent again on every MQTT connect. */
  live(): HollowInstance[] {
    return [...this.instances.values()].filter((instance) => instance.status !== 'removed');
  }

  /** The `instances` array of a telemetry message, as JSON; rebuilt only after a change. */
  summariesJson(): string {
    this.summaries ??= JSON.stringify(
      this.live().map((i) => ({
        job: i.jobId,
        instance: i.number,
        generation: i.generation,
        status: i.status,
      })),
    );
    return this.summaries;
  }

  /** The `instances` array of a `jobs/resources` message, as JSON; rebuilt only after a change. */
  resourcesJson(): string {
    this.resources ??= JSON.stringify(
      this.live()
        .filter((i) => i.status === 'running')
        .map((i) => ({
          job: i.jobId,
          instance: i.number,
          cpuPercent: INSTANCE_CPU_PERCENT,
          memoryBytes: INSTANCE_MEMORY_BYTES,
        })),
    );
    return this.resources;
  }

  /** The worker got another node id: what it ran belonged to the old one. */
  clear(): void {
    this.instances.clear();
    this.processed.clear();
    this.jobTombstones.clear();
    this.tombstones = 0;
    this.running = 0;
    this.changed();
  }

  private deleteInstance(command: Command): Outcome {
    const key = keyOf(command.job.id, command.instance);
    const current = this.instances.get(key);
    if (current && command.generation < current.generation) {
      return {
        kind: 'stale',
        reason: `generation ${command.generation} is older than ${current.generation}`,
      };
    }
    const tombstone: HollowInstance = {
      jobId: command.job.id,
      number: command.instance,
      generation: command.generation,
      status: 'removed',
      containerId: current?.containerId ?? '',
      issuedAt: command.issuedAt,
    };
    this.put(key, tombstone, current);
    return current && current.status !== 'removed'
      ? { kind: 'stopped', instances: [tombstone] }
      : { kind: 'unchanged' };
  }

  private deleteJob(command: Command): Outcome {
    const jobId = command.job.id;
    this.jobTombstones.set(jobId, Math.max(command.generation, this.jobTombstones.get(jobId) ?? 0));
    const stopped: HollowInstance[] = [];
    for (const [key, current] of this.instances) {
      if (current.jobId !== jobId || current.status === 'removed') continue;
      if (current.generation > command.generation) continue;
      const tombstone: HollowInstance = { ...current, generation: command.generation, status: 'removed' };
      this.put(key, tombstone, current);
      stopped.push(tombstone);
    }
    return stopped.length > 0 ? { kind: 'stopped', instances: stopped } : { kind: 'unchanged' };
  }

  private put(key: string, next: HollowInstance, previous: HollowInstance | undefined): void {
    if (previous?.status === 'running') this.running--;
    if (previous?.status === 'removed') this.tombstones--;
    if (next.status === 'removed') this.tombstones++;
    this.instances.set(key, next);
    this.changed();
    if (this.tombstones > TOMBSTONE_LIMIT) this.pruneTombstones();
  }

  private pruneTombstones(): void {
    for (const [key, instance] of this.instances) {
      if (this.tombstones <= TOMBSTONE_LIMIT) break;
      if (instance.status !== 'removed') continue;
      this.instances.delete(key);
      this.tombstones--;
    }
  }

  private remember(commandId: string): void {
    this.processed.add(commandId);
    if (this.processed.size <= PROCESSED_LIMIT) return;
    // A Set iterates in insertion order: the first entry is the oldest.
    for (const id of this.processed) {
      this.processed.delete(id);
      break;
    }
  }

  private changed(): void {
    this.summaries = undefined;
    this.resources = undefined;
  }
}
