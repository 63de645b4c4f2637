import { describe, expect, it } from 'vitest';
import { nextRescheduleAt } from '../../cluster-manager/jobs/reschedule.js';

const policy = { attempts: 3, intervalMs: 60_000, delayMs: 1000, maxDelayMs: 3000 };

describe('the reschedule policy', () => {
  it('waits delayMs after the failure, doubling with each attempt in the interval, up to maxDelayMs', () => {
    expect(nextRescheduleAt(policy, 10_000, [], 10_000)).toBe(11_000);
    expect(nextRescheduleAt(policy, 20_000, [11_000], 20_000)).toBe(22_000);
    expect(nextRescheduleAt(policy, 30_000, [11_000, 22_000], 30_000)).toBe(33_000); // 4 s capped at 3 s
  });

  it('gives up once the attempts within the interval are used, and tries again when they age out', () => {
    const history = [11_000, 22_000, 33_000];
    expect(nextRescheduleAt(policy, 40_000, history, 40_000)).toBeUndefined();
    // A minute after the first attempt, one of three is out of the interval: one more, at the doubled delay.
    expect(nextRescheduleAt(policy, 40_000, history, 71_001)).toBe(43_000);
  });

  it('never reschedules with attempts 0', () => {
    expect(nextRescheduleAt({ ...policy, attempts: 0 }, 0, [], 1_000_000)).toBeUndefined();
  });
});
