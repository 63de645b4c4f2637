import { readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { removeStaleTempFiles, writeFileAtomic } from '../../shared/atomic-file.js';
import {
  type Command,
  type InstanceNetwork,
  InstanceNetworkSchema,
  type JobDefinition,
  JobDefinitionSchema,
} from '../../shared/index.js';
import type { WorkloadDescription } from '../runtimes/runtime.js';

/** How many command ids are remembered for deduplication; older ones fall off first. */
export const PROCESSED_COMMANDS_LIMIT = 10_000;
/** How many tombstones are kept; the oldest are forgotten first. */
export const TOMBSTONES_LIMIT = 10_000;

export type Want = 'run' | 'removed';

/** What the node should do with one instance of a job. Tombstones (`removed`) keep older deploys out. */
export interface DesiredInstance {
  job: JobDefinition;
  instance: number;
  generation: number;
  want: Want;
  updatedAt: number;
  /** Its overlay addresses, when the cluster has an overlay. */
  network?: InstanceNetwork;
}

const DesiredInstanceSchema = z.object({
  job: JobDefinitionSchema,
  instance: z.number().int().min(0),
  generation: z.number().int().min(0),
  want: z.enum(['run', 'removed']),
  updatedAt: z.number(),
  network: InstanceNetworkSchema.optional(),
});

const DesiredStateFileSchema = z.object({
  nodeId: z.string(),
  instances: z.array(DesiredInstanceSchema),
  /** jobId -> generation of a `delete` with `instance: -1`: deploys of that job at or below it are stale. */
  jobTombstones: z.record(z.string(), z.number()).default({}),
  processedCommands: z.array(z.string()),
});
type DesiredStateFile = z.infer<typeof DesiredStateFileSchema>;

/** What applying a command did. */
export type ApplyOutcome =
  | { kind: 'applied'; changed: DesiredInstance[] }
  | { kind: 'duplicate' }
  | { kind: 'stale'; reason: string };

/** The file's content, or undefined when it does not parse or does not fit the schema. */
function parseStateFile(text: string): DesiredStateFile | undefined {
  try {
    const parsed = DesiredStateFileSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Steps that take a transition back, run last first when its write fails. */
type Undo = Array<() => void>;

export function instanceKey(jobId: string, instance: number): string {
  return `${jobId}/${instance}`;
}

/**
 * The node's desired state, persisted in `<data-dir>/desired-state.json`. Commands change it; the reconciler
 * makes the runtimes match it. Every change is written atomically before `apply` resolves, so an ack sent
 * after it means the command survives a crash.
 */
export class DesiredStateStore {
  private readonly instances = new Map<string, DesiredInstance>();
  private readonly jobTombstones = new Map<string, number>();
  private readonly processed = new Set<string>();
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    readonly path: string,
    readonly nodeId: string,
  ) {}

  /** Loads the state of `nodeId`; a file written for another node id (the node re-joined) starts empty. */
  static async load(dataDir: string, nodeId: string, now = Date.now()): Promise<DesiredStateStore> {
    const store = new DesiredStateStore(join(dataDir, 'desired-state.json'), nodeId);
    await removeStaleTempFiles(store.path);
    let text: string | undefined;
    try {
      text = await readFile(store.path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    if (text !== undefined) {
      const parsed = parseStateFile(text);
      if (parsed === undefined) {
        // Unreadable (a torn write on a card that lies about fsync, a bit flip): kept aside for a person, and
        // the state is taken back from what runs (adopt) and the cluster manager's resends.
        store.corruptFileSetAside = `${store.path}.corrupt-${now}`;
        await rename(store.path, store.corruptFileSetAside);
      } else if (parsed.nodeId === nodeId) store.restore(parsed);
    }
    return store;
  }

  /**
   * Where an unreadable state file was moved at load; until `adopt` ran, the desired state is rebuilt from the
   * workloads that describe themselves.
   */
  corruptFileSetAside: string | undefined;

  /**
   * After a corrupt state file: takes back every instance that runs here and says what it was made for (a
   * container's `edge.spec` label, a native pid file), as desired at its generation, and persists them.
   * Returns how many were taken back. Instances the cluster manager still wants and that are not there it sends
   * again; what is neither described nor sent again is removed as any undesired workload.
   */
  async adopt(
    workloads: { jobId: string; instance: number; generation: number; description?: WorkloadDescription }[],
    now = Date.now(),
  ): Promise<number> {
    const undo: Undo = [];
    for (const workload of workloads) {
      const description = workload.description;
      if (!description || description.job.id !== workload.jobId) continue;
      const key = instanceKey(workload.jobId, workload.instance);
      const current = this.instances.get(key);
      if (current && current.generation >= workload.generation) continue;
      this.replace(
        key,
        {
          job: description.job,
          instance: workload.instance,
          generation: workload.generation,
          want: 'run',
          updatedAt: now,
          ...(description.network ? { network: description.network } : {}),
        },
        undo,
      );
    }
    if (undo.length > 0) {
      try {
        await this.persist();
      } catch (error) {
        for (const step of undo.reverse()) step();
        throw error;
      }
    }
    this.corruptFileSetAside = undefined;
    return undo.length;
  }

  private restore(file: DesiredStateFile): void {
    for (const entry of file.instances) {
      this.instances.set(instanceKey(entry.job.id, entry.instance), entry as DesiredInstance);
    }
    for (const [jobId, generation] of Object.entries(file.jobTombstones))
      this.jobTombstones.set(jobId, generation);
    for (const id of file.processedCommands) this.processed.add(id);
  }

  hasProcessed(commandId: string): boolean {
    return this.processed.has(commandId);
  }

  get(jobId: string, instance: number): DesiredInstance | undefined {
    return this.instances.get(instanceKey(jobId, instance));
  }

  all(): DesiredInstance[] {
    return [...this.instances.values()];
  }

  /**
   * Applies a command to the state and persists it. Repeats and stale generations change nothing. A write that
   * fails (a full disk) changes nothing either: the state in memory goes back to what the file holds, and the
   * command is not remembered, so its redelivery applies it again.
   */
  async apply(command: Command, now = Date.now()): Promise<ApplyOutcome> {
    if (this.processed.has(command.id)) return { kind: 'duplicate' };
    const undo: Undo = [];
    const outcome = this.transition(command, now, undo);
    this.remember(command.id);
    try {
      await this.persist();
    } catch (error) {
      this.processed.delete(command.id);
      for (const step of undo.reverse()) step();
      throw error;
    }
    return outcome;
  }

  private transition(command: Command, now: number, undo: Undo): ApplyOutcome {
    const jobId = command.job.id;
    if (command.command === 'delete') {
      if (command.instance === -1) return this.deleteJob(command, now, undo);
      return this.setInstance(command, 'removed', now, undo);
    }
    if (command.instance < 0) return { kind: 'stale', reason: `instance ${command.instance} cannot be run` };
    const jobTombstone = this.jobTombstones.get(jobId);
    if (jobTombstone !== undefined && command.generation <= jobTombstone) {
      return { kind: 'stale', reason: `job ${jobId} was deleted at generation ${jobTombstone}` };
    }
    return this.setInstance(command, 'run', now, undo);
  }

  private setInstance(command: Command, want: Want, now: number, undo: Undo): ApplyOutcome {
    const key = instanceKey(command.job.id, command.instance);
    const current = this.instances.get(key);
    if (current) {
      if (command.generation < current.generation) {
        return {
          kind: 'stale',
          reason: `generation ${command.generation} is older than ${current.generation}`,
        };
      }
      // At the same generation a tombstone wins: a redelivered deploy must not revive a deleted instance.
      if (command.generation === current.generation && current.want === 'removed' && want === 'run') {
        return { kind: 'stale', reason: `generation ${command.generation} was already deleted` };
      }
    }
    const next: DesiredInstance = {
      job: command.job as JobDefinition,
      instance: command.instance,
      generation: command.generation,
      want,
      updatedAt: now,
      ...(command.network ? { network: command.network } : {}),
    };
    this.replace(key, next, undo);
    return { kind: 'applied', changed: [next] };
  }

  private deleteJob(command: Command, now: number, undo: Undo): ApplyOutcome {
    const jobId = command.job.id;
    const tombstone = this.jobTombstones.get(jobId);
    undo.push(() =>
      tombstone === undefined ? this.jobTombstones.delete(jobId) : this.jobTombstones.set(jobId, tombstone),
    );
    this.jobTombstones.set(jobId, Math.max(command.generation, tombstone ?? 0));
    const changed: DesiredInstance[] = [];
    for (const [key, entry] of [...this.instances]) {
      if (entry.job.id !== jobId || entry.want === 'removed') continue;
      const next: DesiredInstance = {
        ...entry,
        want: 'removed',
        generation: Math.max(entry.generation, command.generation),
        updatedAt: now,
      };
      this.replace(key, next, undo);
      changed.push(next);
    }
    return { kind: 'applied', changed };
  }

  /** Entries are replaced, never changed in place: undoing puts the old object back. */
  private replace(key: string, next: DesiredInstance, undo: Undo): void {
    const previous = this.instances.get(key);
    undo.push(() => (previous ? this.instances.set(key, previous) : this.instances.delete(key)));
    this.instances.set(key, next);
  }

  private remember(commandId: string): void {
    this.processed.add(commandId);
    // A Set iterates in insertion order: the first entries are the oldest.
    for (const id of this.processed) {
      if (this.processed.size <= PROCESSED_COMMANDS_LIMIT) break;
      this.processed.delete(id);
    }
  }

  private pruneTombstones(): void {
    const tombstones = this.all().filter((entry) => entry.want === 'removed');
    if (tombstones.length <= TOMBSTONES_LIMIT) return;
    tombstones.sort((a, b) => a.updatedAt - b.updatedAt);
    for (const entry of tombstones.slice(0, tombstones.length - TOMBSTONES_LIMIT)) {
      this.instances.delete(instanceKey(entry.job.id, entry.instance));
    }
  }

  /** Writes are queued so that two commands never interleave their writes of the file. */
  private persist(): Promise<void> {
    this.pruneTombstones();
    const file: DesiredStateFile = {
      nodeId: this.nodeId,
      instances: this.all(),
      jobTombstones: Object.fromEntries(this.jobTombstones),
      processedCommands: [...this.processed],
    };
    const content = JSON.stringify(file);
    const write = this.writing.then(() => writeFileAtomic(this.path, content));
    this.writing = write.catch(() => undefined);
    return write;
  }
}
