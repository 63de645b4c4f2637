import type { JobSpec } from '../../shared/index.js';

/**
 * Fields only the cluster manager acts on: changing them changes no running instance. Everything else (image,
 * command, env, ports, resources, restart, devices, logs, health, constraints) is what an instance was made
 * with, so a change to it replaces instances in a roll-out. `replicas` is not even versioned: a change of it
 * alone scales the job, as in Kubernetes.
 */
const CONTROL_ONLY: ReadonlySet<string> = new Set(['replicas', 'update', 'reschedule', 'disconnect']);

/** JSON with keys sorted at every level: equal specs give equal text whatever order their keys came in. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, inner: unknown) =>
    inner && typeof inner === 'object' && !Array.isArray(inner)
      ? Object.fromEntries(Object.entries(inner).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : inner,
  );
}

/** The top-level fields whose values differ, in the schema's order. */
export function changedFields(from: JobSpec, to: JobSpec): string[] {
  const keys = new Set([...Object.keys(from), ...Object.keys(to)]);
  return [...keys].filter(
    (key) => canonical(from[key as keyof JobSpec]) !== canonical(to[key as keyof JobSpec]),
  );
}

/** Instances made from `from` run exactly as instances made from `to` would. */
export function runsTheSame(from: JobSpec, to: JobSpec): boolean {
  return changedFields(from, to).every((field) => CONTROL_ONLY.has(field));
}
