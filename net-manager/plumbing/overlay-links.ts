import { numberToIp, parseCidr } from '../../shared/ipv4.js';
import type { Logger } from '../../shared/logger.js';
import { listOverlayVeths } from './container-link.js';
import { disableIpv6 } from './disable-ipv6.js';
import { CommandError, type CommandRunner } from './ip-command.js';

export interface OverlayLinksOptions {
  /** Runs commands in the worker's network namespace. */
  runner: CommandRunner;
  logger?: Logger;
  /** The TUN device (opened by the net manager; only configured here). */
  tun?: string;
  bridge?: string;
  /** The overlay's address block routed into the TUN (`--overlay-route`). */
  overlayRoute?: string;
  mtu?: number;
  /** Our own iptables chain, jumped to from FORWARD. */
  chain?: string;
}

export interface SetUpResult {
  /** The bridge's address and the containers' next hop: the subnet's first host address. */
  gateway: string;
  prefixLength: number;
  /** `unavailable`: iptables is not installed, forwarding relies on the FORWARD policy (logged). */
  firewall: 'configured' | 'unavailable';
}

/** The fields of `ip -j addr show` read here. */
interface IpAddresses {
  ifname: string;
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

/**
 * The worker side of the overlay: the TUN carries the overlay route, a bridge holds the gateway address of the
 * worker's subnet and the containers' veths, the kernel forwards between them, and an iptables chain of our own
 * lets that traffic through FORWARD (Docker sets its policy to DROP; with br_netfilter, even traffic between two
 * ports of the bridge passes FORWARD).
 */
export class OverlayLinks {
  readonly tun: string;
  readonly bridge: string;
  readonly overlayRoute: string;
  /** The TUN's and bridge's MTU; set before `setUp` to change it. */
  mtu: number;
  readonly chain: string;
  private readonly runner: CommandRunner;
  private readonly logger: Logger | undefined;

  constructor(options: OverlayLinksOptions) {
    this.runner = options.runner;
    this.logger = options.logger;
    this.tun = options.tun ?? 'edge0';
    this.bridge = options.bridge ?? 'edgebr0';
    this.overlayRoute = options.overlayRoute ?? '10.16.0.0/12';
    this.mtu = options.mtu ?? 1450;
    this.chain = options.chain ?? 'EDGE-OVERLAY';
  }

  /**
   * Configures the TUN, the bridge for `subnet` (e.g. `10.18.0.64/26`), forwarding and the firewall. Idempotent;
   * called again with another subnet it moves the bridge to the new gateway address.
   */
  async setUp(subnet: string): Promise<SetUpResult> {
    const range = parseCidr(subnet);
    const gateway = numberToIp(range.first + 1);
    await this.configureForwarding();
    const bridgeNow = await this.addressesOf(this.bridge);
    const staleAddresses = (bridgeNow?.addr_info ?? [])
      .filter(
        (info) => info.family === 'inet' && !(info.local === gateway && info.prefixlen === range.prefix),
      )
      .map((info) => `addr del ${info.local}/${info.prefixlen} dev ${this.bridge}`);
    if (!bridgeNow) await this.runner.ipBatch([`link add name ${this.bridge} mtu ${this.mtu} type bridge`]);
    await disableIpv6(this.runner, [this.bridge, this.tun]);
    await this.runner.ipBatch([
      // A longer queue than TUN's 500: bursts from the containers wait instead of being dropped (retransmits).
      `link set dev ${this.tun} mtu ${this.mtu} txqueuelen 1000 up`,
      `route replace ${this.overlayRoute} dev ${this.tun}`,
      ...staleAddresses,
      `addr replace ${gateway}/${range.prefix} dev ${this.bridge}`,
      // A bridge left to itself takes the lowest MAC of its ports and changes it when that port goes, leaving
      // the containers' ARP entries for the gateway pointing nowhere for seconds; a set address stays.
      `link set dev ${this.bridge} address ${gatewayMac(range.first + 1)} mtu ${this.mtu} up`,
    ]);
    const firewall = await this.configureFirewall();
    return { gateway, prefixLength: range.prefix, firewall };
  }

  /** Removes the container veths, the bridge, the overlay route and the firewall chain. The TUN is not ours. */
  async tearDown(): Promise<string[]> {
    const veths = await listOverlayVeths(this.runner);
    const bridge = await this.addressesOf(this.bridge);
    const tun = await this.addressesOf(this.tun);
    await this.runner
      .ipBatch(
        [
          ...veths.map((veth) => `link del dev ${veth}`),
          ...(bridge ? [`link del dev ${this.bridge}`] : []),
          ...(tun ? [`route del ${this.overlayRoute} dev ${this.tun}`] : []),
        ],
        { force: true },
      )
      .catch((error: unknown) => {
        // `-force` ran every line; one already gone (a route that went with its TUN) is what is left to report.
        if (!(error instanceof CommandError && /No such process|Cannot find device/.test(error.stderr)))
          throw error;
      });
    const chainRemoved = await this.removeFirewall();
    return [
      ...veths,
      ...(bridge ? [this.bridge] : []),
      ...(chainRemoved ? [`iptables chain ${this.chain}`] : []),
    ];
  }

  /**
   * At start-up, before `setUp`: removes what a crashed earlier run left (its veths, bridge, route and chain),
   * logs it and returns what it removed, so that nothing stale survives.
   */
  async cleanUpLeftovers(): Promise<string[]> {
    const removed = await this.tearDown();
    if (removed.length > 0) this.logger?.warn({ removed }, 'removed the overlay links of an earlier run');
    return removed;
  }

  /** IPv4 forwarding, and loose reverse-path filtering on the TUN: packets from other workers arrive there. */
  private async configureForwarding(): Promise<void> {
    if (!(await this.addressesOf(this.tun))) {
      throw new Error(`the TUN device ${this.tun} does not exist: open it before setting up the overlay`);
    }
    // The kernel applies max(all, <dev>): strict (1) in `all` would make the TUN strict too.
    const all = (await this.runner.run(['sysctl', '-n', 'net.ipv4.conf.all.rp_filter'])).trim();
    await this.runner.run([
      'sysctl',
      '-q',
      '-w',
      'net.ipv4.ip_forward=1',
      `net.ipv4.conf.${this.tun.replaceAll('.', '/')}.rp_filter=2`,
      ...(all === '1' ? ['net.ipv4.conf.all.rp_filter=2'] : []),
    ]);
    if (all === '1')
      this.logger?.info('net.ipv4.conf.all.rp_filter set from strict (1) to loose (2) for the overlay');
  }

  /** Our chain, flushed and filled in one `iptables-restore`, and one jump to it at the top of FORWARD. */
  private async configureFirewall(): Promise<'configured' | 'unavailable'> {
    const rules = [
      '*filter',
      `:${this.chain} - [0:0]`,
      `-A ${this.chain} -i ${this.tun} -j ACCEPT`,
      `-A ${this.chain} -o ${this.tun} -j ACCEPT`,
      `-A ${this.chain} -i ${this.bridge} -o ${this.bridge} -j ACCEPT`,
      'COMMIT',
      '',
    ].join('\n');
    try {
      await this.runner.run(['iptables-restore', '-w', '--noflush'], { input: rules });
      if (!(await this.succeeds(['iptables', '-w', '-C', 'FORWARD', '-j', this.chain]))) {
        await this.runner.run(['iptables', '-w', '-I', 'FORWARD', '1', '-j', this.chain]);
      }
      return 'configured';
    } catch (error) {
      if (error instanceof CommandError && error.notInstalled) {
        this.logger?.warn(
          'iptables is not installed: overlay traffic is forwarded only if the FORWARD policy lets it through',
        );
        return 'unavailable';
      }
      throw error;
    }
  }

  /** Removes every jump to our chain and the chain; true when there was one. */
  private async removeFirewall(): Promise<boolean> {
    try {
      while (await this.succeeds(['iptables', '-w', '-D', 'FORWARD', '-j', this.chain])) {
        // a jump added twice (by hand, or by an older run) goes too
      }
      if (!(await this.succeeds(['iptables', '-w', '-F', this.chain]))) return false;
      await this.runner.run(['iptables', '-w', '-X', this.chain]);
      return true;
    } catch (error) {
      if (error instanceof CommandError && error.notInstalled) return false;
      throw error;
    }
  }

  /** Whether an iptables check/delete succeeded; a missing iptables still throws. */
  private async succeeds(argv: string[]): Promise<boolean> {
    try {
      await this.runner.run(argv);
      return true;
    } catch (error) {
      if (error instanceof CommandError && !error.notInstalled) return false;
      throw error;
    }
  }

  private async addressesOf(device: string): Promise<IpAddresses | undefined> {
    try {
      return (await this.runner.ipJson<IpAddresses>(['addr', 'show', 'dev', device]))[0];
    } catch (error) {
      if (error instanceof CommandError && /does not exist|Cannot find device/.test(error.stderr))
        return undefined;
      throw error;
    }
  }
}

/** A locally administered MAC that names the gateway: `02:ed:` and its four address bytes. */
function gatewayMac(gateway: number): string {
  const bytes = [gateway >>> 24, (gateway >>> 16) & 255, (gateway >>> 8) & 255, gateway & 255];
  return ['02', 'ed', ...bytes.map((byte) => byte.toString(16).padStart(2, '0'))].join(':');
}
