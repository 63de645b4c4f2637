import { describe, expect, it } from 'vitest';
import { RateLimiter } from '../../cluster-manager/registry/rate-limit.js';

describe('RateLimiter', () => {
  it('lets a burst through, then the rate, per key; rate 0 is no limit', () => {
    let now = 0;
    const limiter = new RateLimiter(2, 4, () => now);
    const takes = (key: string, count: number) =>
      Array.from({ length: count }, () => limiter.take(key)).filter(Boolean).length;
    expect(takes('a', 10)).toBe(4);
    expect(takes('b', 10)).toBe(4); // another address has its own bucket
    now += 1000;
    expect(takes('a', 10)).toBe(2);
    now += 60_000;
    expect(takes('a', 10)).toBe(4); // refilled, never above the burst
    const open = new RateLimiter(0, 0, () => now);
    expect(Array.from({ length: 1000 }, () => open.take('a')).every(Boolean)).toBe(true);
  });
});
