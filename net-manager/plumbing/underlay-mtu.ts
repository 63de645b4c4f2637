import { lookup } from 'node:dns/promises';
import { readFile } from 'node:fs/promises';
import type { CommandRunner } from './ip-command.js';
import { defaultRoute, routeTo } from './underlay-route.js';

/** Bytes an overlay packet gains on the underlay: IPv4 and UDP headers, and the seal when encrypted. */
export const UNDERLAY_OVERHEAD = { plain: 28, sealed: 28 + 32 } as const;
/**
 * Room left below the underlay's MTU besides the overhead (so the defaults are WireGuard's 1420 encrypted and
 * the 1450 of before unencrypted, on a 1500-byte underlay): a tunnel or PPPoE beyond the first hop.
 */
const MARGIN = { plain: 22, sealed: 20 } as const;
/** The TUN's MTU stays within these: packets must fit the forwarder's slots; IPv4 needs 576. */
export const MTU_LIMITS = { min: 576, max: 1500 } as const;

/**
 * The TUN's MTU for an underlay: the MTU of the interface that carries overlay UDP towards `brokerHost` (the
 * default route's when that is loopback, on the all-in-one machine) minus what the overlay adds, so no overlay
 * packet is fragmented on the first hop. 1500 when nothing can be read.
 */
export async function overlayMtu(
  runner: CommandRunner,
  brokerHost: string,
  sealed: boolean,
): Promise<number> {
  const underlay = (await underlayMtu(runner, brokerHost).catch(() => undefined)) ?? 1500;
  const kind = sealed ? 'sealed' : 'plain';
  const mtu = underlay - UNDERLAY_OVERHEAD[kind] - MARGIN[kind];
  return Math.min(MTU_LIMITS.max, Math.max(MTU_LIMITS.min, mtu));
}

async function underlayMtu(runner: CommandRunner, brokerHost: string): Promise<number | undefined> {
  const { address } = await lookup(brokerHost, { family: 4 });
  let device = (await routeTo(runner, address)).dev;
  if (device === 'lo' || device === undefined) device = (await defaultRoute(runner)).dev;
  if (!device) return undefined;
  const mtu = Number((await readFile(`/sys/class/net/${device}/mtu`, 'utf8')).trim());
  return Number.isInteger(mtu) && mtu > 0 ? mtu : undefined;
}
