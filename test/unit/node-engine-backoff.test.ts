import { describe, expect, it } from 'vitest';
import { BackOff, formatDelay } from '../../node-engine/backoff.js';
import { PullProgress } from '../../node-engine/runtimes/docker-pull.js';
import { backoffDelay, doublingDelay } from '../../shared/index.js';

class FakeClock {
  time = 5_000;
  readonly now = () => this.time;
}

describe('node engine back-off (injected clock)', () => {
  it('doubles from the base to the cap, says once when it reaches the cap, and never gives up', () => {
    const clock = new FakeClock();
    const backOff = new BackOff({ baseMs: 1000, maxMs: 300_000, now: clock.now });
    const delays: number[] = [];
    const capped: number[] = [];
    for (let i = 0; i < 14; i++) {
      expect(backOff.ready('pull')).toBe(true);
      const { delayMs, failures, firstAtCap } = backOff.fail('pull');
      delays.push(delayMs);
      if (firstAtCap) capped.push(failures);
      expect(backOff.ready('pull')).toBe(false);
      expect(backOff.remainingMs('pull')).toBe(delayMs);
      clock.time += delayMs - 1;
      expect(backOff.ready('pull')).toBe(false);
      clock.time += 1;
    }
    expect(delays).toEqual([
      1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000, 300_000, 300_000, 300_000,
      300_000,
    ]);
    expect(capped).toEqual([10]);
    expect(backOff.failures('pull')).toBe(14);
  });

  it('starts afresh after a success, and after a quiet spell of twice the cap; keys are independent', () => {
    const clock = new FakeClock();
    const backOff = new BackOff({ baseMs: 1000, maxMs: 60_000, now: clock.now });
    backOff.fail('a');
    backOff.fail('a');
    expect(backOff.fail('a').delayMs).toBe(4000);
    expect(backOff.fail('b').delayMs).toBe(1000);
    backOff.reset('a');
    expect(backOff.ready('a')).toBe(true);
    expect(backOff.fail('a').delayMs).toBe(1000);
    backOff.fail('b');
    clock.time += 120_000 - 1;
    expect(backOff.fail('b').delayMs).toBe(4000);
    clock.time += 120_000;
    expect(backOff.fail('b')).toMatchObject({ delayMs: 1000, failures: 1 });
    backOff.retain((key) => key === 'b');
    expect(backOff.failures('a')).toBe(0);
    expect(backOff.failures('b')).toBe(1);
  });

  it('follows its own clock, not the date: a date set back or forward changes no deadline', () => {
    const clock = new FakeClock();
    const backOff = new BackOff({ baseMs: 1000, maxMs: 60_000, now: clock.now });
    backOff.fail('x');
    const realNow = Date.now;
    try {
      Date.now = () => realNow() + 3600_000;
      expect(backOff.ready('x')).toBe(false);
      Date.now = () => realNow() - 3600_000;
      expect(backOff.ready('x')).toBe(false);
    } finally {
      Date.now = realNow;
    }
    clock.time += 1000;
    expect(backOff.ready('x')).toBe(true);
  });

  it('says delays as people read them', () => {
    // One doubling for the whole project: the node engine's back-offs and the jittered reconnects share it.
    expect(doublingDelay(0, 1000, 60_000)).toBe(1000);
    expect(doublingDelay(2, 1000, 60_000)).toBe(4000);
    expect(doublingDelay(60, 1000, 60_000)).toBe(60_000);
    expect(backoffDelay(2, 1000, 60_000, () => 1)).toBe(4000);
    expect(backoffDelay(2, 1000, 60_000, () => 0)).toBe(2000);
    expect([800, 1000, 40_000, 60_000, 150_000, 300_000].map(formatDelay)).toEqual([
      '800ms',
      '1s',
      '40s',
      '1m',
      '2m30s',
      '5m',
    ]);
  });
});

describe('pull progress', () => {
  it('adds up the layers Docker reports, and tells progress from repeated events', () => {
    const progress = new PullProgress();
    expect(progress.describe()).toBe('pulling');
    expect(progress.measure()).toBeUndefined();
    expect(progress.take({ status: 'Pulling from library/x', id: 'latest' })).toBe(true);
    expect(progress.take({ status: 'Pulling fs layer', id: 'a' })).toBe(true);
    expect(progress.take({ status: 'Pulling fs layer', id: 'b' })).toBe(true);
    expect(
      progress.take({ status: 'Downloading', id: 'a', progressDetail: { current: 30e6, total: 100e6 } }),
    ).toBe(true);
    expect(
      progress.take({ status: 'Downloading', id: 'b', progressDetail: { current: 1e6, total: 20e6 } }),
    ).toBe(true);
    expect(progress.describe()).toBe('pulling 25% of 120 MB');
    expect(progress.measure()).toEqual({ percent: 25, totalBytes: 120e6 });
    // The same numbers again are no progress: a stalled registry does not keep the pull alive.
    expect(
      progress.take({ status: 'Downloading', id: 'a', progressDetail: { current: 30e6, total: 100e6 } }),
    ).toBe(false);
    expect(progress.take({ status: 'Download complete', id: 'b' })).toBe(true);
    expect(progress.describe()).toBe('pulling 41% of 120 MB');
    expect(progress.take({ status: 'Pull complete', id: 'a' })).toBe(true);
    expect(progress.describe()).toBe('pulling 100% of 120 MB');
    expect(progress.take({ status: 'Digest: sha256:00' })).toBe(false);
  });
});
