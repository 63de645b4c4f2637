import type { HealthCheck, HealthState, Logger, Technology } from '../shared/index.js';
import type { InstanceSpec, Runtime, RuntimeHandle } from './runtimes/runtime.js';

/** What the checks say of one running instance. */
export interface HealthVerdict {
  health: HealthState;
  /** Why it is unhealthy; empty otherwise. */
  detail: string;
}

/** One running start of one instance under check. */
interface Checked {
  /** Which start this is: a new generation, workload or start time begins again at `starting`. */
  start: string;
  verdict: HealthVerdict;
  /** Failed checks in a row. */
  failures: number;
  timer: NodeJS.Timeout | undefined;
  stopped: boolean;
}

/**
 * Runs each job's health check on its running instances, every `intervalMs` (the first one interval after the
 * start), one at a time
 * per instance. A start is `starting` until a check passes (then `healthy`) or `failures` fail in a row (then
 * `unhealthy`); `failures` failures in a row make a healthy one unhealthy, and one pass makes it healthy again.
 * Only a change of verdict calls `onChange`, so a flapping check costs reports only when the verdict flips.
 * The verdict informs (status reports, roll-outs); it never restarts anything: the restart policy does that.
 */
export class HealthChecks {
  private readonly checked = new Map<string, Checked>();

  constructor(
    private readonly runtimes: ReadonlyMap<Technology, Runtime>,
    private readonly onChange: () => void,
    private readonly logger: Logger,
  ) {}

  /**
   * The verdict for an instance seen running as `handle` since `startedAt`; checking starts with the first call
   * for a start. Undefined for a job without a check.
   */
  verdict(key: string, spec: InstanceSpec, handle: RuntimeHandle, startedAt: number | undefined) {
    const check = spec.job.health;
    if (!check) {
      this.forget(key);
      return undefined;
    }
    const start = `${spec.generation}/${handle.id}/${startedAt ?? ''}`;
    let checked = this.checked.get(key);
    if (checked?.start !== start) {
      this.forget(key);
      checked = {
        start,
        verdict: { health: 'starting', detail: '' },
        failures: 0,
        timer: undefined,
        stopped: false,
      };
      this.checked.set(key, checked);
      // The first one an interval after the start, as Docker's HEALTHCHECK: a server is seldom up at once.
      this.schedule(checked, spec, handle, check, check.intervalMs);
    }
    return checked.verdict;
  }

  /** The instance no longer runs (or is gone): its checks stop. */
  forget(key: string): void {
    const checked = this.checked.get(key);
    if (!checked) return;
    checked.stopped = true;
    clearTimeout(checked.timer);
    this.checked.delete(key);
  }

  stop(): void {
    for (const key of [...this.checked.keys()]) this.forget(key);
  }

  private schedule(
    checked: Checked,
    spec: InstanceSpec,
    handle: RuntimeHandle,
    check: HealthCheck,
    delayMs: number,
  ): void {
    checked.timer = setTimeout(async () => {
      const runtime = this.runtimes.get(spec.job.technology);
      const failure = runtime
        ? await runtime.checkHealth(handle, spec, check)
        : `no ${spec.job.technology} runtime`;
      if (checked.stopped) return;
      this.judge(checked, spec, failure, check);
      this.schedule(checked, spec, handle, check, check.intervalMs);
    }, delayMs);
    checked.timer.unref();
  }

  private judge(checked: Checked, spec: InstanceSpec, failure: string | null, check: HealthCheck): void {
    const before = checked.verdict.health;
    if (failure === null) {
      checked.failures = 0;
      checked.verdict = { health: 'healthy', detail: '' };
    } else {
      checked.failures++;
      if (checked.failures >= check.failures)
        checked.verdict = { health: 'unhealthy', detail: `health check failing: ${failure}` };
    }
    if (checked.verdict.health === before) return;
    this.logger.info(
      { job: spec.job.name, instance: spec.instance, health: checked.verdict.health, failure },
      'health changed',
    );
    this.onChange();
  }
}
