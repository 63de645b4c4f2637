import type { CommandRunner } from './ip-command.js';

/** Interfaces whose addresses no other worker can reach this one at: containers' bridges and veths, tunnels of ours. */
const NOT_UNDERLAY = /^(lo|docker\d*|br-.*|veth.*|ve-.*|cni.*|flannel.*|vxlan.*)$/;

/**
 * This worker's IPv4 addresses that other workers may reach it at (global scope, on interfaces that are up and
 * are not container plumbing or the overlay's own), in the kernel's order. Announced as candidates: two workers
 * behind the same NAT find each other on the local network this way.
 */
export async function localAddresses(runner: CommandRunner, ownInterfaces: string[]): Promise<string[]> {
  const output = await runner
    .run(['ip', '-4', '-o', 'addr', 'show', 'scope', 'global', 'up'])
    .catch(() => '');
  const addresses: string[] = [];
  for (const line of output.split('\n')) {
    const match = /^\d+:\s+(\S+)\s+inet (\d+\.\d+\.\d+\.\d+)\//.exec(line);
    if (!match) continue;
    const device = match[1]!.replace(/@.*$/, '');
    if (NOT_UNDERLAY.test(device) || ownInterfaces.includes(device)) continue;
    if (!addresses.includes(match[2]!)) addresses.push(match[2]!);
  }
  return addresses;
}
