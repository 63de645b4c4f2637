import { existsSync } from 'node:fs';
import type { CommandRunner } from './ip-command.js';

/**
 * Turns IPv6 off on overlay devices in the runner's namespace, best done before they come up. The overlay is
 * IPv4-only: a link-local address would send router solicitations and neighbour discovery into it, which the
 * data plane drops (`notIpv4`). A kernel without IPv6 (`ipv6.disable=1`) has no `/proc/sys/net/ipv6` in any
 * namespace, so looking in our own tells: then there is nothing to turn off.
 */
export async function disableIpv6(runner: CommandRunner, devices: readonly string[]): Promise<void> {
  if (devices.length === 0 || !existsSync('/proc/sys/net/ipv6')) return;
  await runner.run([
    'sysctl',
    '-q',
    '-w',
    ...devices.map((device) => `net.ipv6.conf.${device.replaceAll('.', '/')}.disable_ipv6=1`),
  ]);
}
