import type { InstanceStatus, Logger, Technology } from '../shared/index.js';
import { monotonicMs } from '../shared/monotonic-clock.js';
import { BackOff, formatDelay } from './backoff.js';
import { HealthChecks } from './health-checks.js';
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
  /**
   * Which runtimes answer now (one that does not is neither listed nor acted on), and which exits a runtime caused
   * (its daemon stopped): those are restarted without counting.
   */
  runtimeHealth?: {
    isUp(technology: Technology): boolean;
    stoppedWithRuntime(technology: Technology, finishedAt: number): boolean;
    confirmedUpAfter(technology: Technology, at: number): boolean;
    probeSoon(delayMs: number): void;
  };
  /** Monotonic milliseconds for every deadline (tests inject one). */
  now?: () => number;
}

/**
 * Deploys, starts, overlay attaches and removals that fail are tried again after 1 s, 2 s, 4 s ... up to 5 min
 * (the kubelet's image pull and crash loop back-off), forever: only a new spec or a delete changes what is
 * desired. A quiet spell of twice the cap starts a key afresh.
 */
export const RETRY_BASE_MS = 1000;
export const RETRY_MAX_MS = 5 * 60_000;
/**
 * An exit is decided once the runtime answered a probe made this long after it: dockerd stops its containers as it
 * goes down, and its API is gone within a fraction of a second, so such an exit is seen as part of the outage.
 */
const EXIT_SETTLE_MS = 500;
/** Overlay attaches wait for the local net manager only: their back-off stops at 30 s. */
const ATTACH_RETRY_MAX_MS = 30_000;

/** What the reconciler remembers about one instance between passes (restart counts, pending actions). */
interface Track {
  generation: number;
  restarts: number;
  consecutiveFailures: number;
  deploying: boolean;
  /** An overlay attach of this instance's container is under way. */
  attaching: boolean;
  /** The exit (its finish time) a restart decision was made for, so one exit is decided once. */
  decidedExit?: number;
  /** When (monotonic) the exited workload is started again. */
  nextRestartAt?: number;
  /** Whether that start counts as a restart (not after a failed start, nor after its runtime stopped it). */
  countRestart?: boolean;
  settled: boolean;
  /**
   * The current start as this process saw it: the runtime's start time (which names the start), when it was
   * first seen running (monotonic), and how long it had run by then (0 for a start this process made).
   * How long a workload ran is measured from these on the monotonic clock: a wall-clock jump (NTP setting the
   * time of a board without a real-time clock) neither resets the crash back-off nor stalls it.
   */
  runningSeen?: { startedAt: number; at: number; ranBefore: number };
  /** The start time of the last start this process made itself. */
  startedByUs?: number;
  /** The exit (its finish time) being decided, and when (monotonic) it was first seen. */
  exitSeen?: { mark: number; at: number };
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
  private readonly runtimeHealth: ReconcilerOptions['runtimeHealth'];
  private readonly now: () => number;
  /** Failed deploys and starts, by instance key. */
  private readonly deployBackOff: BackOff;
  /** Failed overlay attaches, by instance key. */
  private readonly attachBackOff: BackOff;
  /** Failed removals, by workload handle id. */
  private readonly removeBackOff: BackOff;
  private readonly tracks = new Map<string, Track>();
  private readonly healthChecks: HealthChecks;
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
    this.runtimeHealth = options.runtimeHealth;
    this.now = options.now ?? monotonicMs;
    const retry = { baseMs: RETRY_BASE_MS, maxMs: RETRY_MAX_MS, now: this.now };
    this.deployBackOff = new BackOff(retry);
    this.removeBackOff = new BackOff(retry);
    this.attachBackOff = new BackOff({ ...retry, maxMs: ATTACH_RETRY_MAX_MS });
    this.healthChecks = new HealthChecks(this.runtimes, () => this.trigger(), this.logger);
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
    this.healthChecks.stop();
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
      // Away (dockerd stopped): what it runs cannot be known; its instances wait until it answers again.
      if (this.runtimeHealth && !this.runtimeHealth.isUp(runtime.technology)) continue;
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
    if (this.store.corruptFileSetAside !== undefined) {
      // The state file was unreadable: nothing is removed before what runs is taken back, from every runtime.
      if (listed.size < this.runtimes.size) return;
      const adopted = await this.store.adopt(workloads);
      this.logger.warn({ adopted }, 'desired state taken back from the workloads that run here');
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
      if (!listed.has(desired.job.technology) && this.runtimes.has(desired.job.technology)) {
        // Its runtime cannot say what runs: a new instance says what it waits for; others keep their status.
        const said = this.statuses.get(desired.job.id, desired.instance);
        if (said?.generation !== desired.generation)
          this.report(desired, 'creating', {
            detail: `waiting: runtime ${desired.job.technology} is not answering`,
          });
        continue;
      }
      const track = this.track(key, desired.generation);
      const workload = current.get(key);
      if (!workload) this.ensureDeployed(desired, track);
      else this.observe(desired, workload, track);
    }
    for (const state of this.statuses.all()) {
      if (!this.store.get(state.job, state.instance)) this.statuses.forget(state.job, state.instance);
    }
    const wanted = new Set(
      this.store
        .all()
        .filter((desired) => desired.want === 'run')
        .map((desired) => instanceKey(desired.job.id, desired.instance)),
    );
    this.ledger?.retain(wanted).catch(() => {});
    for (const key of this.tracks.keys()) if (!wanted.has(key)) this.tracks.delete(key);
    this.deployBackOff.retain((key) => wanted.has(key));
    this.attachBackOff.retain((key) => wanted.has(key));
    const present = new Set(workloads.map((workload) => workload.handle.id));
    this.removeBackOff.retain((id) => present.has(id) || listed.size < this.runtimes.size);
  }

  private track(key: string, generation: number): Track {
    let track = this.tracks.get(key);
    if (!track || track.generation !== generation) {
      // A new spec is tried at once, whatever the old one's back-off.
      if (track) {
        this.deployBackOff.reset(key);
        this.attachBackOff.reset(key);
      }
      const saved = this.ledger?.get(key, generation);
      track = {
        generation,
        restarts: saved?.restarts ?? 0,
        consecutiveFailures: saved?.consecutiveFailures ?? 0,
        deploying: false,
        attaching: false,
        // Given up before this process started: that exit stays decided (a running workload clears it).
        ...(saved?.settledExit !== undefined ? { decidedExit: saved.settledExit } : {}),
        settled: saved?.settledExit !== undefined,
      };
      this.tracks.set(key, track);
    }
    return track;
  }

  private report(desired: DesiredInstance, status: InstanceStatus, patch: Partial<InstanceState> = {}): void {
    const previous = this.statuses.get(desired.job.id, desired.instance);
    const sameGeneration = previous?.generation === desired.generation;
    const track = this.tracks.get(instanceKey(desired.job.id, desired.instance));
    if (status !== 'running') this.healthChecks.forget(instanceKey(desired.job.id, desired.instance));
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
    const handle = { technology: desired.job.technology, id: containerId };
    const key = instanceKey(desired.job.id, desired.instance);
    const verdict = this.healthChecks.verdict(key, this.specOf(desired), handle, startedAt);
    this.report(desired, 'running', {
      containerId,
      ...(startedAt !== undefined ? { startedAt } : {}),
      ...(namespaceIp !== undefined ? { namespaceIp } : {}),
      ...(verdict ? { health: verdict.health, detail: verdict.detail } : {}),
    });
  }

  private settleRemoved(desired: DesiredInstance, workloads: RuntimeWorkload[]): void {
    const stillThere = workloads.some((w) => w.jobId === desired.job.id && w.instance === desired.instance);
    const previous = this.statuses.get(desired.job.id, desired.instance);
    if (stillThere || !previous || previous.status === 'stopped') return;
    this.report(desired, 'stopped', { detail: 'removed', containerId: previous.containerId });
  }

  private removeInBackground(workload: RuntimeWorkload, desired: DesiredInstance | undefined): void {
    const id = workload.handle.id;
    if (this.removing.has(id) || !this.removeBackOff.ready(id)) return;
    const runtime = this.runtimes.get(workload.handle.technology);
    if (!runtime) return;
    this.removing.set(id, instanceKey(workload.jobId, workload.instance));
    // Only the instance's own generation being deleted is reported; an older generation replaced by a newer
    // one on this node goes quietly, as the newer one speaks for the instance.
    const reportable = desired?.want === 'removed' ? desired : undefined;
    if (reportable) this.report(reportable, 'stopping', { detail: 'stopping', containerId: id });
    if (this.removeBackOff.failures(id) === 0)
      this.logger.info(
        { job: workload.jobName, instance: workload.instance, generation: workload.generation, id },
        'removing workload that is not desired',
      );
    this.background(async () => {
      try {
        await runtime.remove(workload.handle);
        if (workload.handle.technology === 'docker') await this.overlay?.detach(id);
        this.removeBackOff.reset(id);
        if (reportable) this.report(reportable, 'stopped', { detail: 'removed', containerId: id });
      } catch (error) {
        const text = (error as Error).message;
        const retry = this.backOff(this.removeBackOff, id, { id, job: workload.jobName }, text, 'remove');
        if (reportable)
          this.report(reportable, 'stopping', {
            detail: `back-off ${retry}: remove failed: ${text}`,
            containerId: id,
          });
      } finally {
        this.removing.delete(id);
      }
    });
  }

  private ensureDeployed(desired: DesiredInstance, track: Track): void {
    const key = instanceKey(desired.job.id, desired.instance);
    if (track.deploying || track.settled || !this.deployBackOff.ready(key)) return;
    const runtime = this.runtimes.get(desired.job.technology);
    if (!runtime) {
      this.report(desired, 'creating', {
        detail: `waiting: runtime ${desired.job.technology} is not available on this node`,
      });
      return;
    }
    // Make room first: an older generation of this instance may hold the same host ports. The removal
    // triggers another pass when it ends.
    for (const removingKey of this.removing.values()) if (removingKey === key) return;
    track.deploying = true;
    const spec = this.specOf(desired);
    this.background(async () => {
      try {
        const deployed = await runtime.deploy(spec, (phase, detail, pull) =>
          this.report(desired, phase, { detail, ...(pull ? { pull } : {}) }),
        );
        track.startedByUs = deployed.startedAt;
        this.deployBackOff.reset(key);
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
        this.deployFailed(desired, error);
      } finally {
        track.deploying = false;
      }
    });
  }

  /**
   * A deploy or start failed: whatever the reason (an image not there yet, a registry away, Docker restarting, a
   * start refused), it is tried again after the instance's back-off. The status stays where it failed and holds
   * the instance's resources; the detail says when it is tried again and why.
   */
  private deployFailed(desired: DesiredInstance, error: unknown): number {
    const key = instanceKey(desired.job.id, desired.instance);
    const text = (error as Error).message ?? String(error);
    const log = { job: desired.job.name, instance: desired.instance };
    const retry = this.backOff(this.deployBackOff, key, log, text, 'deploy');
    const status: InstanceStatus =
      error instanceof RuntimeError && error.code === 'image_pull_failed' ? 'pulling' : 'creating';
    const retryInMs = this.deployBackOff.remainingMs(key);
    this.report(desired, status, {
      detail: `back-off ${retry}: ${text}`,
      backOff: { failures: this.deployBackOff.failures(key), retryInMs },
    });
    return retryInMs;
  }

  /**
   * Counts a failure under `key`, schedules the pass that tries again, and logs the first failure and the one
   * that reaches the longest delay (a failure that repeats forever must not fill the disk). Returns the delay
   * as text for the detail ("40s", "5m").
   */
  private backOff(
    backOff: BackOff,
    key: string,
    log: Record<string, unknown>,
    error: string,
    what: string,
  ): string {
    const { delayMs, failures, firstAtCap } = backOff.fail(key);
    this.schedule(delayMs);
    const entry = { ...log, err: error, failures, retryInMs: delayMs };
    if (failures === 1) this.logger.warn(entry, `${what} failed; trying again with back-off`);
    else if (firstAtCap)
      this.logger.warn(entry, `${what} still failing; trying again every ${formatDelay(delayMs)}`);
    else this.logger.debug(entry, `${what} failed again`);
    return formatDelay(delayMs);
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
      this.noteRunning(track, workload);
      const ranLong = this.ranFor(track, this.now()) >= RESTART_BACKOFF_RESET_MS;
      if (ranLong && track.consecutiveFailures > 0) {
        track.consecutiveFailures = 0;
        this.saveCounts(desired, track);
      }
      this.reportRunning(desired, containerId, workload.startedAt, namespaceIp);
      return;
    }
    if (workload.state === 'created') {
      if (this.deployBackOff.ready(instanceKey(desired.job.id, desired.instance)))
        this.restart(desired, workload, track, false);
      return;
    }
    // An exit seen while a start is under way is decided on the pass after it, with the restart counted.
    if (workload.state !== 'exited' || track.deploying) return;
    const exitMark = workload.finishedAt ?? 0;
    if (track.decidedExit !== exitMark) {
      if (track.exitSeen?.mark !== exitMark) track.exitSeen = { mark: exitMark, at: this.now() };
      if (!this.runtimeSettledAfter(workload, track.exitSeen.at)) return;
      this.decide(desired, workload, track, exitMark);
    }
    if (track.nextRestartAt !== undefined && this.now() >= track.nextRestartAt) {
      track.nextRestartAt = undefined;
      this.restart(desired, workload, track, track.countRestart ?? true);
    }
  }

  /**
   * Whether the runtime answered a probe made EXIT_SETTLE_MS after the exit was first seen (`seenAt`,
   * monotonic); if not, a probe and a pass are asked for. Without runtime health (tests of the reconciler alone)
   * every exit is decided at once.
   */
  private runtimeSettledAfter(workload: RuntimeWorkload, seenAt: number): boolean {
    const health = this.runtimeHealth;
    const technology = workload.handle.technology;
    if (!health || workload.finishedAt === undefined) return true;
    if (health.stoppedWithRuntime(technology, workload.finishedAt)) return true;
    const settledAt = seenAt + EXIT_SETTLE_MS;
    if (health.confirmedUpAfter(technology, settledAt)) return true;
    const wait = Math.max(0, settledAt - this.now());
    health.probeSoon(wait);
    this.schedule(wait + 100);
    return false;
  }

  /**
   * Records when this process first saw the workload's current start running. A start it did not make itself
   * (adopted after a restart of the node engine) had run since its runtime's start time, by the wall clock, once.
   */
  private noteRunning(track: Track, workload: RuntimeWorkload): void {
    const startedAt = workload.startedAt;
    if (startedAt === undefined || track.runningSeen?.startedAt === startedAt) return;
    const ranBefore = track.startedByUs === startedAt ? 0 : Math.max(0, Date.now() - startedAt);
    track.runningSeen = { startedAt, at: this.now(), ranBefore };
  }

  /** How long the start `noteRunning` saw has run, until `until` (monotonic). */
  private ranFor(track: Track, until: number): number {
    const seen = track.runningSeen;
    return seen ? seen.ranBefore + Math.max(0, until - seen.at) : 0;
  }

  private decide(desired: DesiredInstance, workload: RuntimeWorkload, track: Track, exitMark: number): void {
    track.decidedExit = exitMark;
    const common = {
      containerId: workload.handle.id,
      ...(workload.exitCode !== undefined ? { exitCode: workload.exitCode } : {}),
      ...(workload.startedAt !== undefined ? { startedAt: workload.startedAt } : {}),
    };
    const code = workload.exitCode === undefined ? '' : ` with code ${workload.exitCode}`;
    // Stopped by its runtime's daemon going down, not by itself: started again at once, and not counted
    // against `on-failure`, `maxRetries` or the crash back-off, whatever the exit code.
    if (
      workload.finishedAt !== undefined &&
      this.runtimeHealth?.stoppedWithRuntime(workload.handle.technology, workload.finishedAt)
    ) {
      track.settled = false;
      track.nextRestartAt = this.now();
      track.countRestart = false;
      this.report(desired, 'exited', {
        ...common,
        detail: `exited${code} when ${workload.handle.technology} stopped; starting it again (not counted)`,
      });
      return;
    }
    // Seen running by this process: until the exit was first seen, on the monotonic clock. Else (it exited
    // before this process saw it run) by its runtime's own times.
    const ranFor =
      track.runningSeen !== undefined && track.runningSeen.startedAt === workload.startedAt
        ? this.ranFor(track, track.exitSeen?.at ?? this.now())
        : (workload.finishedAt ?? 0) - (workload.startedAt ?? 0);
    if (ranFor >= RESTART_BACKOFF_RESET_MS) track.consecutiveFailures = 0;
    const decision = decideAfterExit(
      desired.job.restart,
      workload.exitCode,
      track.restarts,
      track.consecutiveFailures,
    );
    if (decision.action === 'give-up') {
      track.settled = true;
      this.saveCounts(desired, track, exitMark);
      this.report(desired, decision.status, { ...common, detail: decision.reason });
      return;
    }
    track.nextRestartAt = this.now() + decision.delayMs;
    track.countRestart = true;
    this.schedule(decision.delayMs);
    const due = new Date(Date.now() + decision.delayMs).toISOString();
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
        track.startedByUs = startedAt;
        this.deployBackOff.reset(instanceKey(desired.job.id, desired.instance));
        // A new start is a new network namespace: the next pass attaches it before it counts as running.
        if (this.overlay?.wanted(desired)) return;
        this.reportRunning(desired, workload.handle.id, startedAt);
      } catch (error) {
        if (error instanceof RuntimeError && error.code === 'not_found') return;
        // The start is tried again after the back-off (without counting another restart).
        const waitMs = this.deployFailed(desired, error);
        if (workload.state === 'exited') {
          track.nextRestartAt = this.now() + waitMs;
          track.countRestart = false;
        }
      } finally {
        track.deploying = false;
      }
    });
  }

  /** Joins a running container to the overlay; until that works it is `creating`, tried again with back-off. */
  private attachInBackground(desired: DesiredInstance, workload: RuntimeWorkload, track: Track): void {
    const overlay = this.overlay;
    const pid = workload.pid;
    const key = instanceKey(desired.job.id, desired.instance);
    if (!overlay || pid === undefined || track.attaching || !this.attachBackOff.ready(key)) return;
    track.attaching = true;
    const containerId = workload.handle.id;
    this.background(async () => {
      try {
        const namespaceIp = await overlay.attach(desired, containerId, pid);
        this.attachBackOff.reset(key);
        this.reportRunning(desired, containerId, workload.startedAt, namespaceIp);
      } catch (error) {
        const text = (error as Error).message;
        const log = { job: desired.job.name, instance: desired.instance };
        const retry = this.backOff(this.attachBackOff, key, log, text, 'overlay attach');
        this.report(desired, 'creating', {
          containerId,
          detail: `back-off ${retry}: started; cannot join the overlay yet: ${text}`,
        });
      } finally {
        track.attaching = false;
      }
    });
  }

  private saveCounts(desired: DesiredInstance, track: Track, settledExit?: number): void {
    const key = instanceKey(desired.job.id, desired.instance);
    const { generation, restarts, consecutiveFailures } = track;
    const entry = {
      generation,
      restarts,
      consecutiveFailures,
      ...(settledExit !== undefined ? { settledExit } : {}),
    };
    this.ledger?.record(key, entry).catch((error: Error) => {
      this.logger.warn({ err: error.message }, 'cannot save restart counts');
    });
  }

  private specOf(desired: DesiredInstance): InstanceSpec {
    return {
      nodeId: this.nodeId,
      job: desired.job,
      instance: desired.instance,
      generation: desired.generation,
      ...(desired.network ? { network: desired.network } : {}),
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
