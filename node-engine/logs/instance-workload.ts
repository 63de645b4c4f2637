import type { Runtime, RuntimeWorkload } from '../runtimes/runtime.js';

/** An instance's workload on this node, and the runtime that runs it. */
export interface InstanceWorkload {
  runtime: Runtime;
  workload: RuntimeWorkload;
}

/**
 * The workload of an instance on this node, as the runtimes list them: the one of `generation` when there is one
 * (what the cluster manager placed here), else the newest. `failures`: runtimes that did not answer (the workload
 * may be theirs).
 */
export async function findInstanceWorkload(
  runtimes: Runtime[],
  wanted: { job: string; instance: number; generation?: number },
): Promise<{ found?: InstanceWorkload; failures: string[] }> {
  let found: InstanceWorkload | undefined;
  const failures: string[] = [];
  for (const runtime of runtimes) {
    let workloads: RuntimeWorkload[];
    try {
      workloads = await runtime.list();
    } catch (error) {
      failures.push(`${runtime.technology}: ${(error as Error).message}`);
      continue;
    }
    for (const workload of workloads) {
      if (workload.jobId !== wanted.job || workload.instance !== wanted.instance) continue;
      const better =
        !found ||
        workload.generation === wanted.generation ||
        (found.workload.generation !== wanted.generation && workload.generation > found.workload.generation);
      if (better) found = { runtime, workload };
    }
  }
  return { ...(found ? { found } : {}), failures };
}
