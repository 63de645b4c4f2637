import { backoffDelay, type InstanceStatus, type Logger, type Technology } from '../shared/index.js';
import { type InstanceState, InstanceStatusBook } from './instance-status.js';
import type { OverlayAttachments } from './overlay-attachments.js';
import { decideAfterExit, RESTART_BACKOFF_RESET_MS } from './restart-policy.js';
import { type InstanceSpec, type Runtime, RuntimeError, type RuntimeWorkload } from './runtimes/runtime.js';
import { type DesiredInstance, type DesiredStateStore, instanceKey } from './state/desired-state.js';
import type { RestartLedger } from './state/restart-ledger.js';

export interface ReconcilerOptions {
  nodeId: string;
  store: DesiredStateStore;
  runtimes: Runtime[];
  statuses?: InstanceStatusBook;
  logger: Logger;
  /** How often the loop runs without any trigger, to heal what no event told about. */
  periodMs?: number;
  /** Where restart counts outlive the process; without it they live in memory only. */
  ledger?: RestartLedger;
  /** Joins containers to the overlay; without it (or with the overlay off) they keep Docker's network only. */
  overlay?: OverlayAttachments;
}

/** Overlay attach retries: 1 s after the first failure, doubling up to 30 s (with jitter). */
const ATTACH_RETRY_BASE_MS = 1000;
const ATTACH_RETRY_MAX_MS = 30_000;

/** What the reconciler remembers about one instance between passes (restart counts, pending actions). */
interface Track {
  generation: number;
  restarts: number;
  consecutiveFailures: number;
  deploying: boolean;
  /** An overlay attach of this instance's container is under way. */
  attaching: boolean;
  /** After a failed overlay attach, the next one is tried no earlier than this. */
  retryAttachAt?: number;
  /** Overlay attaches that failed in a row: they set the backoff and how often it is logged. */
  attachFailures: number;
  /** Deploys of this generation are given up (image not pullable, create refused). */
  failed: boolean;
  /** After an unexpected error (Docker away), the next deploy is tried no earlier than this. */
  retryDeployAt?: number;
  /** The exit (its finish time) a restart decision was made for, so one exit is decided once. */
  decidedExit?: number;
  nextRestartAt?: number;
  settled: boolean;
}

/**
 * Level-triggered sync loop (kubelet style): compares the desired state with what the runtimes run for this
 * node, creates what is missing, removes what is not desired, restarts what exited by the job's policy, and
 * adopts what already runs. Every pass is safe to repeat; slow actions (pulls, stops) run in the background
 * and trigger another pass when they end.
 */
export class Reconciler {
  readonly statuses: InstanceStatusBook;
  private readonly nodeId: string;
  private readonly store: DesiredStateStore;
  private readonly runtimes: Map<Technology, Runtime>;
  private readonly logger: Logger;
  private readonly periodMs: number;
  private readonly ledger: RestartLedger | undefined;
  private readonly overlay: OverlayAttachments | undefined;
  private readonly tracks = new Map<string, Track>();
  /** Workloads being removed: handle id -> instance key. */
  private readonly removing = new Map<string, string>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly unwatch: Array<() => void> = [];
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private interval: NodeJS.Timeout | undefined;

  constructor(options: ReconcilerOptions) {
    this.nodeId = options.nodeId;
    this.store = options.store;
    this.runtimes = new Map(options.runtimes.map((runtime) => [runtime.technology, runtime]));
    this.statuses = options.statuses ?? new InstanceStatusBook();
    this.logger = options.logger.child({ part: 'reconciler' });
    this.periodMs = options.periodMs ?? 5000;
    this.ledger = options.ledger;
    this.overlay = options.overlay;
  }

  start(): void {
    for (const runtime of this.runtimes.values()) this.unwatch.push(runtime.watch(() => this.trigger()));
    this.interval = setInterval(() => this.trigger(), this.periodMs);
    this.trigger();
  }

  /** Stops the loop and waits for actions under way; workloads keep running (they are adopted on restart). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.interval);
    for (const timer of this.timers) clearTimeout(timer);
    for (const unwatch of this.unwatch) unwatch();
    await this.running;
    await Promise.allSettled([...this.inFlight]);
  }

  /** Asks for a pass; passes never overlap, and triggers during one coalesce into one more. */
  trigger(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.loop().finally(() => {
      this.running = undefined;
    });
  }

  /** Runs passes until no trigger came in during the last one; resolves when the state is settled for now. */
  async reconcileNow(): Promise<void> {
    this.trigger();
    while (this.running) await this.running;
  }

  /** Resolves when no pass and no background action is under way. */
  async idle(): Promise<void> {
    while (this.running || this.inFlight.size > 0) {
      await this.running;
      await Promise.allSettled([...this.inFlight]);
    }
  }

  private async loop(): Promise<void> {
    do {
      this.again = false;
      try {
        await this.pass();
      } catch (error) {
        this.logger.error({ err: error }, 'reconcile pass failed');
      }
    } while (this.again && !this.stopped);
  }

  private async pass(): Promise<void> {
    const workloads: RuntimeWorkload[] = [];
    const listed = new Set<Technology>();
    for (const runtime of this.runtimes.values()) {
      try {
        workloads.push(...(await runtime.list()));
        listed.add(runtime.technology);
      } catch (error) {
        // Without a listing we cannot tell what runs: act on nothing of that runtime rather than duplicate.
        this.logger.warn(
          { err: (error as Error).message, runtime: runtime.technology },
          'cannot list workloads',
        );
      }
    }
    const current = new Map<string, RuntimeWorkload>();
    for (const workload of workloads) {
      const desired = this.store.get(workload.jobId, workload.instance);
      const wanted =
        desired?.want === 'run' &&
        desired.generation === workload.generation &&
        desired.job.technology === workload.handle.technology;
      if (wanted) current.set(instanceKey(workload.jobId, workload.instance), workload);
      else this.removeInBackground(workload, desired);
    }
    for (const desired of this.store.all()) {
      const key = instanceKey(desired.job.id, desired.instance);
      if (desired.want === 'removed') {
        this.settleRemoved(desired, workloads);
        continue;
      }
      if (!listed.has(desired.job.technology) && this.runtimes.has(desired.job.technology)) continue;
      const track = this.track(key, desired.generation);
      const workload = current.get(key);
      if (!workload) this.ensureDeployed(desired, track);
      else this.observe(desired, workload, track);
    }
    for (const state of this.statuses.all()) {
      if (!this.store.get(state.job, state.instance)) this.statuses.forget(state.job, state.instance);
    }
    const wanted = this.store.all().filter((desired) => desired.want === 'run');
    this.ledger
      ?.retain(new Set(wanted.map((desired) => instanceKey(desired.job.id, desired.instance))))
      .catch(() => {});
  }

  private track(key: string, generation: number): Track {
    let track = this.tracks.get(key);
    if (!track || track.generation !== generation) {
      const saved = this.ledger?.get(key, generation);
      track = {
        generation,
        restarts: saved?.restarts ?? 0,
        consecutiveFailures: saved?.consecutiveFailures ?? 0,
        deploying: false,
        attaching: false,
        attachFailures: 0,
        failed: false,
        settled: false,
      };
      this.tracks.set(key, track);
    }
    return track;
  }

  private report(desired: DesiredInstance, status: InstanceStatus, patch: Partial<InstanceState> = {}): void {
    const previous = this.statuses.get(desired.job.id, desired.instance);
    const sameGeneration = previous?.generation === desired.generation;
    const track = this.tracks.get(instanceKey(desired.job.id, desired.instance));
    const state: InstanceState = {
      job: desired.job.id,
      jobName: desired.job.name,
      instance: desired.instance,
      generation: desired.generation,
      technology: desired.job.technology,
      status,
      detail: '',
      containerId: sameGeneration ? (previous?.containerId ?? null) : null,
      restarts: track?.generation === desired.generation ? track.restarts : 0,
      ...patch,
    };
    this.statuses.set(state);
  }

  private reportRunning(
    desired: DesiredInstance,
    containerId: string,
    startedAt: number | undefined,
    namespaceIp?: string,
  ): void {
    this.report(desired, 'running', {
      containerId,
      ...(startedAt !== undefined ? { startedAt } : {}),
      ...(namespaceIp !== undefined ? { namespaceIp } : {}),
    });
  }

  private settleRemoved(desired: DesiredInstance, workloads: RuntimeWorkload[]): void {
    const stillThere = workloads.some((w) => w.jobId === desired.job.id && w.instance === desired.instance);
    const previous = this.statuses.get(desired.job.id, desired.instance);
    if (stillThere || !previous || previous.status === 'stopped') return;
    this.report(desired, 'stopped', { detail: 'removed', containerId: previous.containerId });
  }

  private removeInBackground(workload: RuntimeWorkload, desired: DesiredInstance | undefined): void {
    if (this.removing.has(workload.handle.id)) return;
    const runtime = this.runtimes.get(workload.handle.technology);
    if (!runtime) return;
    this.removing.set(workload.handle.id, instanceKey(workload.jobId, workload.instance));
    // Only the instance's own generation being deleted is reported; an older generation replaced by a newer
    // one on this node goes quietly, as the newer one speaks for the instance.
    const reportable = desired?.want === 'removed' ? desired : undefined;
    if (reportable)
      this.report(reportable, 'stopping', { detail: 'stopping', containerId: workload.handle.id });
    this.logger.info(
      {
        job: workload.jobName,
        instance: workload.instance,
        generation: workload.generation,
        id: workload.handle.id,
      },
      'removing workload that is not desired',
    );
    this.background(async () => {
      try {
        await runtime.remove(workload.handle);
        if (workload.handle.technology === 'docker') await this.overlay?.detach(workload.handle.id);
        if (reportable)
          this.report(reportable, 'stopped', { detail: 'removed', containerId: workload.handle.id });
      } catch (error) {
        this.logger.error({ err: (error as Error).message, id: workload.handle.id }, 'remove failed');
      } finally {
        this.removing.delete(workload.handle.id);
      }
    });
  }

  private ensureDeployed(desired: DesiredInstance, track: Track): void {
    if (track.deploying || track.failed || track.settled) return;
    if (track.retryDeployAt !== undefined && Date.now() < track.retryDeployAt) return;
    const runtime = this.runtimes.get(desired.job.technology);
    if (!runtime) {
      track.failed = true;
      this.report(desired, 'failed', {
        detail: `runtime ${desired.job.technology} is not available on this node`,
      });
      return;
    }
    // Make room first: an older generation of this instance may hold the same host ports. The removal
    // triggers another pass when it ends.
    const key = instanceKey(desired.job.id, desired.instance);
    for (const removingKey of this.removing.values()) if (removingKey === key) return;
    track.deploying = true;
    const spec = this.specOf(desired);
    this.background(async () => {
      try {
        const deployed = await runtime.deploy(spec, (phase, detail) =>
          this.report(desired, phase, { detail }),
        );
        track.retryDeployAt = undefined;
        // The next pass (right after this one ends) joins it to the overlay and only then says `running`.
        if (this.overlay?.wanted(desired)) {
          this.report(desired, 'creating', {
            containerId: deployed.handle.id,
            detail: 'joining the overlay',
          });
          return;
        }
        this.reportRunning(desired, deployed.handle.id, deployed.startedAt);
      } catch (error) {
        this.deployFailed(desired, track, error);
      } finally {
        track.deploying = false;
      }
    });
  }

  private deployFailed(desired: DesiredInstance, track: Track, error: unknown): void {
    const text = (error as Error).message ?? String(error);
    if (error instanceof RuntimeError) {
      track.failed = true;
      this.report(desired, 'failed', { detail: text });
    } else {
      // Not the job's fault (the runtime went away): try again later, the status says so.
      track.consecutiveFailures++;
      const delay = Math.min(60_000, 1000 * 2 ** Math.min(track.consecutiveFailures, 10));
      track.retryDeployAt = Date.now() + delay;
      this.schedule(delay);
      this.report(desired, 'failed', { detail: `${text}; retrying in ${Math.round(delay / 1000)} s` });
    }
    this.logger.warn({ job: desired.job.name, instance: desired.instance, err: text }, 'deploy failed');
  }

  /** A workload of the desired generation exists: report it, start it, or apply the restart policy. */
  private observe(desired: DesiredInstance, workload: RuntimeWorkload, track: Track): void {
    const containerId = workload.handle.id;
    if (workload.state === 'running') {
      track.settled = false;
      let namespaceIp: string | undefined;
      if (this.overlay?.wanted(desired) && workload.pid !== undefined) {
        namespaceIp = this.overlay.namespaceIp(containerId, workload.pid);
        if (namespaceIp === undefined) {
          this.attachInBackground(desired, workload, track);
          return;
        }
      }
      const ranLong =
        workload.startedAt !== undefined && Date.now() - workload.startedAt >= RESTART_BACKOFF_RESET_MS;
      if (ranLong && track.consecutiveFailures > 0) {
        track.consecutiveFailures = 0;
        this.saveCounts(desired, track);
      }
      this.reportRunning(desired, containerId, workload.startedAt, namespaceIp);
      return;
    }
    if (workload.state === 'created') {
      this.restart(desired, workload, track, false);
      return;
    }
    // An exit seen while a start is under way is decided on the pass after it, with the restart counted.
    if (workload.state !== 'exited' || track.deploying) return;
    const exitMark = workload.finishedAt ?? 0;
    if (track.decidedExit !== exitMark) this.decide(desired, workload, track, exitMark);
    if (track.nextRestartAt !== undefined && Date.now() >= track.nextRestartAt) {
      track.nextRestartAt = undefined;
      this.restart(desired, workload, track, true);
    }
  }

  private decide(desired: DesiredInstance, workload: RuntimeWorkload, track: Track, exitMark: number): void {
    track.decidedExit = exitMark;
    const ranFor = (workload.finishedAt ?? 0) - (workload.startedAt ?? 0);
    if (ranFor >= RESTART_BACKOFF_RESET_MS) track.consecutiveFailures = 0;
    const decision = decideAfterExit(
      desired.job.restart,
      workload.exitCode,
      track.restarts,
      track.consecutiveFailures,
    );
    const common = {
      containerId: workload.handle.id,
      ...(workload.exitCode !== undefined ? { exitCode: workload.exitCode } : {}),
      ...(workload.startedAt !== undefined ? { startedAt: workload.startedAt } : {}),
    };
    if (decision.action === 'give-up') {
      track.settled = true;
      this.report(desired, decision.status, { ...common, detail: decision.reason });
      return;
    }
    track.nextRestartAt = Date.now() + decision.delayMs;
    this.schedule(decision.delayMs);
    const code = workload.exitCode === undefined ? '' : ` with code ${workload.exitCode}`;
    const due = new Date(track.nextRestartAt).toISOString();
    this.report(desired, 'exited', {
      ...common,
      detail: `exited${code}; restart ${track.restarts + 1} due at ${due} (in ${Math.round(decision.delayMs / 1000)} s)`,
    });
  }

  private restart(desired: DesiredInstance, workload: RuntimeWorkload, track: Track, counts: boolean): void {
    const runtime = this.runtimes.get(workload.handle.technology);
    if (!runtime || track.deploying) return;
    track.deploying = true;
    // Counted before the start, so that an exit racing the start can never be granted a restart twice.
    if (counts) {
      track.restarts++;
      track.consecutiveFailures++;
      this.saveCounts(desired, track);
    }
    const spec = this.specOf(desired);
    this.background(async () => {
      try {
        const startedAt = await runtime.start(workload.handle, spec);
        // A new start is a new network namespace: the next pass attaches it before it counts as running.
        if (this.overlay?.wanted(desired)) return;
        this.reportRunning(desired, workload.handle.id, startedAt);
      } catch (error) {
        if (error instanceof RuntimeError && error.code === 'not_found') return;
        this.deployFailed(desired, track, error);
      } finally {
        track.deploying = false;
      }
    });
  }

  /** Joins a running container to the overlay; until that works it is `creating`, tried again with backoff. */
  private attachInBackground(desired: DesiredInstance, workload: RuntimeWorkload, track: Track): void {
    const overlay = this.overlay;
    const pid = workload.pid;
    if (!overlay || pid === undefined || track.attaching) return;
    if (track.retryAttachAt !== undefined && Date.now() < track.retryAttachAt) return;
    track.attaching = true;
    const containerId = workload.handle.id;
    this.background(async () => {
      try {
        const namespaceIp = await overlay.attach(desired, containerId, pid);
        track.retryAttachAt = undefined;
        track.attachFailures = 0;
        this.reportRunning(desired, containerId, workload.startedAt, namespaceIp);
      } catch (error) {
        const text = (error as Error).message;
        const attempt = track.attachFailures++;
        const delay = backoffDelay(attempt, ATTACH_RETRY_BASE_MS, ATTACH_RETRY_MAX_MS);
        track.retryAttachAt = Date.now() + delay;
        this.schedule(delay);
        this.report(desired, 'creating', {
          containerId,
          detail: `started; cannot join the overlay yet (${text}); retrying`,
        });
        // Said on the first failure and once more when the retries slow down to their longest interval.
        const atCap = ATTACH_RETRY_BASE_MS * 2 ** attempt >= ATTACH_RETRY_MAX_MS;
        const firstAtCap = atCap && ATTACH_RETRY_BASE_MS * 2 ** (attempt - 1) < ATTACH_RETRY_MAX_MS;
        const log = { job: desired.job.name, instance: desired.instance, err: text, failures: attempt + 1 };
        if (attempt === 0) this.logger.warn(log, 'overlay attach failed; retrying');
        else if (firstAtCap)
          this.logger.warn(
            log,
            `overlay attach still failing; retrying every ${ATTACH_RETRY_MAX_MS / 1000} s at most`,
          );
        else this.logger.debug(log, 'overlay attach failed again');
      } finally {
        track.attaching = false;
      }
    });
  }

  private saveCounts(desired: DesiredInstance, track: Track): void {
    const key = instanceKey(desired.job.id, desired.instance);
    const { generation, restarts, consecutiveFailures } = track;
    this.ledger?.record(key, { generation, restarts, consecutiveFailures }).catch((error: Error) => {
      this.logger.warn({ err: error.message }, 'cannot save restart counts');
    });
  }

  private specOf(desired: DesiredInstance): InstanceSpec {
    return {
      nodeId: this.nodeId,
      job: desired.job,
      instance: desired.instance,
      generation: desired.generation,
    };
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      this.trigger();
    }, delayMs + 10);
    this.timers.add(timer);
  }

  private background(action: () => Promise<void>): void {
    const promise = action().finally(() => {
      this.inFlight.delete(promise);
      this.trigger();
    });
    this.inFlight.add(promise);
  }
}
