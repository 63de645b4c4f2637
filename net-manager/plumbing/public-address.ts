import { lookup } from 'node:dns/promises';
import { unreachableFromPeers } from '../../shared/index.js';
import type { CommandRunner } from './ip-command.js';
import { defaultRoute, routeTo } from './underlay-route.js';

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
  const towardsBroker = (await routeTo(runner, address)).src;
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

/** The address of the interface holding the default route: its `src`, towards its gateway, or the device's first. */
async function defaultRouteAddress(runner: CommandRunner): Promise<string | undefined> {
  const route = await defaultRoute(runner);
  if (route.src) return route.src;
  if (route.via) return (await routeTo(runner, route.via)).src;
  if (!route.dev) return undefined;
  const addresses = await runner.run(['ip', '-4', '-o', 'addr', 'show', 'dev', route.dev, 'scope', 'global']);
  return /\binet (\d+\.\d+\.\d+\.\d+)/.exec(addresses)?.[1];
}
