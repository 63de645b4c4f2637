import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { BINS } from '../helpers/programs.js';

const run = (bin: string, args: string[]) =>
  spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 15_000, env: { ...process.env } });

describe('the programs on the command line', () => {
  for (const [name, bin] of Object.entries({
    clusterManager: BINS.clusterManager,
    nodeEngine: BINS.nodeEngine,
    netManager: BINS.netManager,
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

      const numberFlag = { nodeEngine: '--port', netManager: '--udp-port' }[name] ?? '--http-port';
      const badNumber = run(bin, [numberFlag, 'lots']);
      expect(badNumber.status).toBe(2);
      expect(badNumber.stderr).toMatch(/whole number/);
    });
  }

  it('netManager: a bad address, interface name or overlay route prints one clear line and exits 2', () => {
    for (const [args, message] of [
      [['--public-ip', '10.0.0'], /--public-ip: "10.0.0" is not an IPv4 address/],
      [['--public-ip', '127.0.0.1'], /--public-ip: 127\.0\.0\.1 is a loopback address: workers on other/],
      [['--public-ip', '0.0.0.0'], /--public-ip: 0\.0\.0\.0 is an unspecified address/],
      [['--tun-name', 'a/b'], /--tun-name: "a\/b" is not an interface name/],
      [['--overlay-route', '10.16.0.0'], /--overlay-route: .* is not a CIDR block/],
      [['--overlay-route', '0.0.0.0/0'], /wider than a \/8/],
    ] as const) {
      const result = run(BINS.netManager, [...args]);
      expect(result.status).toBe(2);
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
      expect(result.stderr).toMatch(message);
    }
  });
});
