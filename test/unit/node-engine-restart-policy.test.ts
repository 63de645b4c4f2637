import { describe, expect, it } from 'vitest';
import { decideAfterExit, restartDelayMs } from '../../node-engine/restart-policy.js';

describe('restart policy', () => {
  it('backs off from 1 s doubling up to 5 min', () => {
    expect([0, 1, 2, 3].map(restartDelayMs)).toEqual([1000, 2000, 4000, 8000]);
    expect(restartDelayMs(9)).toBe(300_000);
    expect(restartDelayMs(50)).toBe(300_000);
  });

  it('always restarts, whatever the exit code and count', () => {
    expect(decideAfterExit({ policy: 'always', maxRetries: 1 }, 0, 10, 2)).toEqual({
      action: 'restart',
      delayMs: 4000,
    });
  });

  it('on-failure restarts failures up to maxRetries and stops on success', () => {
    const policy = { policy: 'on-failure', maxRetries: 2 } as const;
    expect(decideAfterExit(policy, 1, 1, 1).action).toBe('restart');
    expect(decideAfterExit(policy, 1, 2, 2)).toMatchObject({ action: 'give-up', status: 'failed' });
    expect(decideAfterExit(policy, 0, 0, 0)).toMatchObject({ action: 'give-up', status: 'stopped' });
  });

  it('never restarts', () => {
    expect(decideAfterExit({ policy: 'never', maxRetries: 5 }, 2, 0, 0)).toMatchObject({ status: 'failed' });
    expect(decideAfterExit({ policy: 'never', maxRetries: 5 }, 0, 0, 0)).toMatchObject({ status: 'stopped' });
  });
});
