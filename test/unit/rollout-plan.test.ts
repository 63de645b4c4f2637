import { describe, expect, it } from 'vitest';
import { planRolloutStep, type RolloutInstance } from '../../cluster-manager/jobs/rollout-plan.js';
import { DEFAULT_UPDATE, type InstanceStatus } from '../../shared/index.js';

const policy = { ...DEFAULT_UPDATE, minHealthyTimeMs: 10_000, healthyDeadlineMs: 60_000 };
const NOW = 1_000_000;

/** An instance of `version`, healthy (running for a minute) unless said otherwise. */
function instance(number: number, version: number, patch: Partial<RolloutInstance> = {}): RolloutInstance {
  return {
    number,
    version,
    status: 'running',
    nodeId: 'n1',
    health: null,
    healthySince: NOW - 60_000,
    versionSince: NOW - 60_000,
    ...patch,
  };
}
const fresh = (number: number, status: InstanceStatus, patch: Partial<RolloutInstance> = {}) =>
  instance(number, 2, { status, healthySince: null, versionSince: NOW - 1000, ...patch });

describe('a roll-out step', () => {
  it('adds maxParallel new instances first and stops nothing while they are not healthy', () => {
    const olds = [instance(0, 1), instance(1, 1), instance(2, 1)];
    expect(planRolloutStep(2, 3, policy, olds, NOW)).toMatchObject({
      outcome: 'running',
      start: 1,
      stop: [],
      progress: '0 of 3 new healthy, 3 old left',
    });
    const withNew = [...olds, fresh(3, 'running', { healthySince: NOW - 5000 })];
    expect(planRolloutStep(2, 3, policy, withNew, NOW)).toMatchObject({ start: 0, stop: [] });
    expect(planRolloutStep(2, 3, { ...policy, maxParallel: 2 }, olds, NOW).start).toBe(2);
  });

  it('stops one old instance for each new one healthy for minHealthyTime, the highest-numbered first', () => {
    const step = planRolloutStep(
      2,
      3,
      policy,
      [instance(0, 1), instance(1, 1), instance(2, 1), fresh(3, 'running', { healthySince: NOW - 10_000 })],
      NOW,
    );
    expect(step).toMatchObject({ stop: [2], start: 1 });
  });

  it('stops old instances that serve nothing before serving ones, and never below replicas serving', () => {
    const step = planRolloutStep(
      2,
      3,
      policy,
      [
        instance(0, 1),
        instance(1, 1, { status: 'exited', healthySince: null }),
        instance(2, 1),
        fresh(3, 'running', { healthySince: NOW - 20_000 }),
      ],
      NOW,
    );
    expect(step.stop).toEqual([1]);
    // An unhealthy old one serves nothing either.
    const unhealthy = planRolloutStep(
      2,
      2,
      policy,
      [instance(0, 1, { health: 'unhealthy' }), instance(1, 1), fresh(2, 'running', { healthySince: null })],
      NOW,
    );
    expect(unhealthy.stop).toEqual([0]);
  });

  it('succeeds once no old instance is left and replicas new ones are healthy', () => {
    const done = [instance(3, 2), instance(4, 2), instance(5, 2), instance(0, 1, { status: 'stopping' })];
    expect(planRolloutStep(2, 3, policy, done, NOW).outcome).toBe('succeeded');
    const young = [instance(3, 2), instance(4, 2), instance(5, 2, { healthySince: NOW - 100 })];
    expect(planRolloutStep(2, 3, policy, young, NOW).outcome).toBe('running');
  });

  it('fails on a new instance that failed, failed its check, or was not healthy within the deadline', () => {
    const olds = [instance(0, 1), instance(1, 1)];
    expect(planRolloutStep(2, 2, policy, [...olds, fresh(2, 'failed')], NOW)).toMatchObject({
      outcome: 'failed',
      failure: '#2 failed',
    });
    expect(
      planRolloutStep(2, 2, policy, [...olds, fresh(2, 'running', { health: 'unhealthy' })], NOW).failure,
    ).toBe('#2 failed its health check');
    const late = fresh(2, 'exited', { versionSince: NOW - 61_000 });
    expect(planRolloutStep(2, 2, policy, [...olds, late], NOW).failure).toBe(
      '#2 not healthy within 60000 ms',
    );
    // Waiting for room, or lost with its node, is not the version's fault.
    const waiting = fresh(2, 'pending', { nodeId: null, versionSince: NOW - 120_000 });
    expect(planRolloutStep(2, 2, policy, [...olds, waiting], NOW).outcome).toBe('running');
    const lost = fresh(2, 'lost', { versionSince: NOW - 120_000 });
    expect(planRolloutStep(2, 2, policy, [...olds, lost], NOW).outcome).toBe('running');
  });

  it('names new instances waiting for room, once per old instance already on its way out', () => {
    const waiting = fresh(2, 'pending', { nodeId: null });
    const step = planRolloutStep(2, 2, policy, [instance(0, 1), instance(1, 1), waiting], NOW);
    expect(step.unplaced).toEqual([2]);
    expect(step.roomFrom).toEqual([1, 0]);
    const making = planRolloutStep(
      2,
      2,
      policy,
      [instance(0, 1), instance(1, 1, { status: 'stopping' }), waiting],
      NOW,
    );
    expect(making.unplaced).toEqual([]);
  });

  it('scales with the update: more replicas add at once, fewer stop old ones first', () => {
    const up = planRolloutStep(2, 5, policy, [instance(0, 2), instance(1, 2)], NOW);
    expect(up).toMatchObject({ start: 3, stop: [] });
    const down = planRolloutStep(2, 1, policy, [instance(0, 1), instance(1, 1), instance(2, 1)], NOW);
    expect(down).toMatchObject({ stop: [2, 1], start: 1 });
  });
});
