import type { HealthState, InstanceStatus, UpdatePolicy } from '../../shared/index.js';
import { isLeaving } from './instance-states.js';

/** What a roll-out step needs to know of an instance. */
export interface RolloutInstance {
  number: number;
  version: number;
  status: InstanceStatus;
  nodeId: string | null;
  health: HealthState | null;
  healthySince: number | null;
  versionSince: number;
}

/** What to do now to bring a job to `version`; the roll-out driver carries it out. */
export interface RolloutStep {
  outcome: 'running' | 'succeeded' | 'failed';
  /** Why it failed: the first new instance that did. */
  failure?: string;
  /** How many instances of the new version to add. */
  start: number;
  /** Old instances to stop: ones that serve nothing, and ones a healthy new instance replaced. */
  stop: number[];
  /**
   * New instances that no node has room for, and for which no old instance is on its way out yet: an old one may
   * be stopped to make room (break-before-make).
   */
  unplaced: number[];
  /** Old instances that may be stopped to make that room, the least useful first. */
  roomFrom: number[];
  /** Where it stands, in words: `2 of 3 new healthy, 1 old left`. */
  progress: string;
}

/** Serving: running, and passing its health check if it has one. */
function serving(instance: RolloutInstance): boolean {
  return instance.status === 'running' && (instance.health === null || instance.health === 'healthy');
}

/**
 * One step of a rolling update to `version` with `replicas` instances, Kubernetes' surge arithmetic with
 * Nomad's health rules:
 * - a new instance counts as healthy once it has served for `minHealthyTimeMs`;
 * - new instances are added while fewer than `replicas` are new, up to `replicas + maxParallel` in all;
 * - an old instance is stopped when it serves nothing and there are more than `replicas`, or when a healthy new
 *   one stands in for it (make-before-break): the count of serving instances never drops below `replicas`;
 * - it fails when a new instance fails for good, its health check says unhealthy, or it was placed
 *   `healthyDeadlineMs` ago and never became healthy. New instances waiting for room neither fail it nor wait
 *   in vain: `unplaced` names them, so that an old instance is stopped where that makes room.
 * Pure: the same inputs give the same step.
 */
export function planRolloutStep(
  version: number,
  replicas: number,
  policy: UpdatePolicy,
  instances: readonly RolloutInstance[],
  now: number,
): RolloutStep {
  const live = instances.filter((instance) => !isLeaving(instance.status));
  const fresh = live.filter((instance) => instance.version === version);
  const old = live.filter((instance) => instance.version !== version);
  const healthyFresh = fresh.filter(
    (instance) =>
      serving(instance) &&
      instance.healthySince !== null &&
      now - instance.healthySince >= policy.minHealthyTimeMs,
  );
  const failure = fresh.map((instance) => failureOf(instance, policy, now)).find((why) => why !== undefined);
  const progress = `${healthyFresh.length} of ${replicas} new healthy, ${old.length} old left`;
  const step: RolloutStep = { outcome: 'running', start: 0, stop: [], unplaced: [], roomFrom: [], progress };
  if (failure !== undefined) return { ...step, outcome: 'failed', failure };
  if (old.length === 0 && healthyFresh.length >= replicas) return { ...step, outcome: 'succeeded' };

  // Old ones that serve nothing go first, then the highest-numbered.
  const byUse = [...old].sort((a, b) => Number(serving(a)) - Number(serving(b)) || b.number - a.number);
  let total = live.length;
  let servingCount = old.filter(serving).length + healthyFresh.length;
  for (const instance of byUse) {
    if (total <= replicas) break;
    if (serving(instance)) {
      if (servingCount - 1 < replicas) continue;
      servingCount--;
    }
    step.stop.push(instance.number);
    total--;
  }
  step.start = Math.max(0, Math.min(replicas - fresh.length, replicas + policy.maxParallel - total));
  // Old instances on their way out free their room once their node acks: room is made for the others only.
  const leavingOld = instances.filter(
    (instance) => isLeaving(instance.status) && instance.version !== version && instance.nodeId !== null,
  ).length;
  step.unplaced = fresh
    .filter((instance) => instance.status === 'pending' && instance.nodeId === null)
    .slice(leavingOld + step.stop.length)
    .map((instance) => instance.number);
  const stopping = new Set(step.stop);
  step.roomFrom = byUse
    .filter((instance) => !stopping.has(instance.number) && instance.nodeId !== null)
    .map((instance) => instance.number);
  return step;
}

/** Why a new instance fails the roll-out, if it does. */
function failureOf(instance: RolloutInstance, policy: UpdatePolicy, now: number): string | undefined {
  const name = `#${instance.number}`;
  if (instance.status === 'failed') return `${name} failed`;
  if (instance.status === 'running' && instance.health === 'unhealthy')
    return `${name} failed its health check`;
  const placed = instance.nodeId !== null && instance.status !== 'pending' && instance.status !== 'lost';
  const healthy = serving(instance) && instance.healthySince !== null;
  if (placed && !healthy && now - instance.versionSince > policy.healthyDeadlineMs)
    return `${name} not healthy within ${policy.healthyDeadlineMs} ms`;
  return undefined;
}
