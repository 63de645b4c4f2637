import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { BINS } from '../helpers/programs.js';

const run = (bin: string, args: string[]) =>
  spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 15_000, env: { ...process.env } });

describe('the programs on the command line', () => {
  for (const [name, bin] of Object.entries({
    clusterManager: BINS.clusterManager,
    nodeEngine: BINS.nodeEngine,
  })) {
    it(`${name}: --help prints the flags and exits 0; a bad flag prints one line and exits 2`, () => {
      const help = run(bin, ['--help']);
      expect(help.status).toBe(0);
      expect(help.stdout).toMatch(/Usage: edge-/);
      expect(help.stdout).toContain('--data-dir');

      const bad = run(bin, ['--bogus']);
      expect(bad.status).toBe(2);
      expect(bad.stderr.trim().split('\n')).toHaveLength(1);
      expect(bad.stderr).toContain('bogus');

      const badNumber = run(bin, name === 'nodeEngine' ? ['--port', 'lots'] : ['--http-port', 'lots']);
      expect(badNumber.status).toBe(2);
      expect(badNumber.stderr).toMatch(/whole number/);
    });
  }
});
