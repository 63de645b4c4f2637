import { execFileSync } from 'node:child_process';
import { execInNamespace, type TestHost, type TestNetwork } from './netns.js';

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * A machine behind a home router, as network namespaces:
 *
 *   test bridge ("the internet") -- router `edge-t-<n>` eth0 10.210.0.(10+n), lan0 192.168.<50+n>.1, MASQUERADE
 *                                     |
 *                                   worker `edge-t-<100+n>` eth0 192.168.<50+n>.2, default route via the router
 *
 * The router rewrites the worker's packets to its own address (iptables MASQUERADE: Linux keeps the source port
 * where it can, and takes back in only what answers a mapping) and drops whatever else comes in from outside, as
 * a home router does. Both
 * namespaces are removed with the test network (their names match its leftovers).
 */
export class NattedHost {
  readonly namespace: string;
  /** The worker's own (private) address. */
  readonly address: string;

  constructor(
    readonly router: TestHost,
    readonly index: number,
  ) {
    this.namespace = `edge-t-${100 + index}`;
    this.address = `192.168.${50 + index}.2`;
  }

  /**
   * `lanMtu`: the MTU between the worker and its router (a PPPoE or VPN link, say).
   * `symmetric`: the NAT gives every destination a random port of its own (`MASQUERADE --random-fully`, as some
   * carrier-grade NATs do): the port a peer learns from the rendezvous port is not the one it would have to
   * reach, so no hole can be punched.
   */
  static create(
    network: TestNetwork,
    index: number,
    options: { symmetric?: boolean; lanMtu?: number } = {},
  ): NattedHost {
    const router = network.addHost(index);
    const host = new NattedHost(router, index);
    const lan = `192.168.${50 + index}`;
    const [outer, inner] = [`vnat-${index}a`, `vnat-${index}b`];
    ip('netns', 'add', host.namespace);
    ip('link', 'add', outer, 'type', 'veth', 'peer', 'name', inner);
    ip('link', 'set', outer, 'netns', router.namespace);
    ip('link', 'set', inner, 'netns', host.namespace);
    ip('-n', router.namespace, 'link', 'set', outer, 'name', 'lan0');
    ip('-n', router.namespace, 'addr', 'add', `${lan}.1/24`, 'dev', 'lan0');
    ip('-n', router.namespace, 'link', 'set', 'lan0', 'up');
    ip('-n', host.namespace, 'link', 'set', inner, 'name', 'eth0');
    ip('-n', host.namespace, 'addr', 'add', `${host.address}/24`, 'dev', 'eth0');
    ip('-n', host.namespace, 'link', 'set', 'eth0', 'up');
    ip('-n', host.namespace, 'link', 'set', 'lo', 'up');
    ip('-n', host.namespace, 'route', 'add', 'default', 'via', `${lan}.1`);
    if (options.lanMtu) {
      ip('-n', router.namespace, 'link', 'set', 'lan0', 'mtu', String(options.lanMtu));
      ip('-n', host.namespace, 'link', 'set', 'eth0', 'mtu', String(options.lanMtu));
    }
    router.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    router.exec('iptables', [
      ...['-w', '-t', 'nat', '-A', 'POSTROUTING', '-o', 'eth0', '-j', 'MASQUERADE'],
      ...(options.symmetric ? ['--random-fully'] : []),
    ]);
    // As a home router's firewall: from the outside only what answers a mapping. (Dropped in INPUT, an unsolicited
    // packet leaves no connection-tracking entry behind that would make the NAT pick another port later.)
    router.exec('iptables', [
      '-w',
      '-A',
      'INPUT',
      '-i',
      'eth0',
      '-m',
      'conntrack',
      '--ctstate',
      'ESTABLISHED,RELATED',
      '-j',
      'ACCEPT',
    ]);
    router.exec('iptables', ['-w', '-A', 'INPUT', '-i', 'eth0', '-j', 'DROP']);
    return host;
  }

  get execPrefix(): string[] {
    return ['ip', 'netns', 'exec', this.namespace];
  }

  exec(command: string, args: string[], timeoutMs = 10_000): string {
    return execInNamespace(this.namespace, command, args, timeoutMs);
  }

  /** IP fragments made in the router and in the worker so far (their namespaces' `FragCreates`). */
  fragmentsMade(): number {
    const made = (text: string) => {
      const [names, values] = text.split('\n').filter((line) => line.startsWith('Ip:'));
      const index = names!.split(/\s+/).indexOf('FragCreates');
      return Number(values!.split(/\s+/)[index]);
    };
    return made(this.router.exec('cat', ['/proc/net/snmp'])) + made(this.exec('cat', ['/proc/net/snmp']));
  }

  /** The router forgets every mapping (a reboot, or a carrier NAT's timeout): the next packets get new ones. */
  flushMappings(): void {
    this.router.exec('conntrack', ['-F'], 10_000);
  }
}
