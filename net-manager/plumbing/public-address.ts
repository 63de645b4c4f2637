import { lookup } from 'node:dns/promises';
import { unreachableFromPeers } from '../../shared/index.js';
import type { CommandRunner } from './ip-command.js';

/** The address peers send this worker's overlay UDP to, and how it was found (for the log). */
export interface PublicAddress {
  ip: string;
  /** `broker`: the source address towards the broker; `default-route`: the broker is on this machine. */
  source: 'broker' | 'default-route';
}

/**
 * Where peers send this worker's overlay UDP unless `--public-ip` says otherwise: the address of the interface
 * that routes to `brokerHost` (normally the cluster manager's machine). When the broker is on this machine that
 * is loopback, which no peer can reach, so the address of the interface holding the default route is taken.
 * Only route lookups: nothing is sent.
 */
export async function findPublicAddress(runner: CommandRunner, brokerHost: string): Promise<PublicAddress> {
  const { address } = await lookup(brokerHost, { family: 4 });
  const towardsBroker = await sourceTowards(runner, address);
  if (!towardsBroker)
    throw new Error(
      `no route to the broker at ${brokerHost} (${address}): cannot tell this worker's public IP; pass --public-ip`,
    );
  if (!unreachableFromPeers(towardsBroker)) return { ip: towardsBroker, source: 'broker' };
  const viaDefault = await defaultRouteAddress(runner);
  if (!viaDefault || unreachableFromPeers(viaDefault))
    throw new Error(
      `the broker is on this machine (${address}) and there is no default route to take an address from: ` +
        'pass --public-ip (NM_PUBLIC_IP) with the address other workers reach this machine at',
    );
  return { ip: viaDefault, source: 'default-route' };
}

/** The source address the kernel picks towards `address`, from `ip -4 route get`. */
async function sourceTowards(runner: CommandRunner, address: string): Promise<string | undefined> {
  const stdout = await runner.run(['ip', '-4', 'route', 'get', address]).catch(() => '');
  return /\bsrc (\d+\.\d+\.\d+\.\d+)/.exec(stdout)?.[1];
}

/** The address of the interface holding the default route: its `src`, towards its gateway, or the device's first. */
async function defaultRouteAddress(runner: CommandRunner): Promise<string | undefined> {
  const route = (await runner.run(['ip', '-4', 'route', 'show', 'default'])).split('\n')[0] ?? '';
  const src = /\bsrc (\d+\.\d+\.\d+\.\d+)/.exec(route)?.[1];
  if (src) return src;
  const gateway = /\bvia (\d+\.\d+\.\d+\.\d+)/.exec(route)?.[1];
  if (gateway) return sourceTowards(runner, gateway);
  const device = /\bdev (\S+)/.exec(route)?.[1];
  if (!device) return undefined;
  const addresses = await runner.run(['ip', '-4', '-o', 'addr', 'show', 'dev', device, 'scope', 'global']);
  return /\binet (\d+\.\d+\.\d+\.\d+)/.exec(addresses)?.[1];
}
