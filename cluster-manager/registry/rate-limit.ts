/**
 * Token buckets, one per key (a source address): `ratePerS` sustained, up to `burst` at once. Buckets that are
 * full again are dropped now and then, so a scan from many addresses costs memory only while it lasts.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private takes = 0;

  constructor(
    private readonly ratePerS: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes one token for `key`; false when its bucket is empty (the caller refuses). Rate 0: no limit. */
  take(key: string): boolean {
    if (this.ratePerS <= 0) return true;
    const now = this.now();
    if (++this.takes % 1000 === 0) this.dropFull(now);
    const bucket = this.buckets.get(key) ?? { tokens: this.burst, at: now };
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) * this.ratePerS) / 1000);
    bucket.at = now;
    this.buckets.set(key, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens--;
    return true;
  }

  private dropFull(now: number): void {
    for (const [key, bucket] of this.buckets)
      if (bucket.tokens + ((now - bucket.at) * this.ratePerS) / 1000 >= this.burst) this.buckets.delete(key);
  }
}
