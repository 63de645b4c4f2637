import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Test hosts as network namespaces on a bridge in the root namespace:
 *
 *   root namespace: bridge `edgetest0` 10.210.0.1/24 -- veth `vedge-t-<n>` --+
 *   namespace `edge-t-<n>`:                              `eth0` 10.210.0.(10+n)/24, lo up
 *
 * A program run in a host reaches the bridge address (INPUT in the root namespace: Docker's FORWARD DROP does
 * not apply); hosts talk to each other through the bridge only after `allowHostToHost()` (bridged traffic goes
 * through iptables FORWARD where Docker loaded br_netfilter, and Docker's policy there is DROP). `cut()` takes
 * the root-side veth down, a partition as the host sees it: its link loses carrier, packets go nowhere, nothing
 * is refused. Everything is removed by `destroy()`, and leftovers of a crashed run are removed on creation.
 */
export const BRIDGE = 'edgetest0';
export const SUBNET_PREFIX = '10.210.0';
export const BRIDGE_ADDRESS = `${SUBNET_PREFIX}.1`;
const NAMESPACE = /^edge-t-\d+$/;
const ROOT_VETH = /^vedge-t-\d+$/;
/** Who owns the test network now: a second run on the same machine must not tear down a live one. */
const OWNER_FILE = join(tmpdir(), `${BRIDGE}.owner`);

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function ipQuiet(...args: string[]): void {
  try {
    ip(...args);
  } catch {
    // already gone
  }
}

function linkExists(name: string): boolean {
  try {
    ip('link', 'show', 'dev', name);
    return true;
  } catch {
    return false;
  }
}

/** The rule that lets test hosts reach each other across the bridge; removed by destroy() and on creation. */
const HOST_TO_HOST_RULE = ['FORWARD', '-i', BRIDGE, '-o', BRIDGE, '-j', 'ACCEPT'];

function iptables(...args: string[]): void {
  execFileSync('iptables', ['-w', ...args], { stdio: 'ignore' });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export class TestHost {
  readonly veth: string;
  readonly address: string;

  constructor(
    readonly index: number,
    readonly namespace = `edge-t-${index}`,
  ) {
    this.veth = `vedge-t-${index}`;
    this.address = `${SUBNET_PREFIX}.${10 + index}`;
  }

  /** `ip netns exec <ns>` prefix for running a command inside this host. */
  get execPrefix(): string[] {
    return ['ip', 'netns', 'exec', this.namespace];
  }

  /** Runs a command inside the host and returns its stdout. */
  exec(command: string, args: string[], timeoutMs = 10_000): string {
    return execInNamespace(this.namespace, command, args, timeoutMs);
  }

  /** Takes the root-side end of the veth down: the host is cut off from everything. */
  cut(): void {
    ip('link', 'set', 'dev', this.veth, 'down');
  }

  /** Brings the root-side end back up. */
  heal(): void {
    ip('link', 'set', 'dev', this.veth, 'up');
  }

  get isCut(): boolean {
    return !/[<,]UP[,>]/.test(ip('link', 'show', 'dev', this.veth));
  }

  create(): void {
    this.destroy();
    ip('netns', 'add', this.namespace);
    ip('link', 'add', this.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', this.namespace);
    ip('link', 'set', 'dev', this.veth, 'master', BRIDGE);
    ip('link', 'set', 'dev', this.veth, 'up');
    ip('-n', this.namespace, 'addr', 'add', `${this.address}/24`, 'dev', 'eth0');
    ip('-n', this.namespace, 'link', 'set', 'dev', 'eth0', 'up');
    ip('-n', this.namespace, 'link', 'set', 'dev', 'lo', 'up');
  }

  /** Removes the namespace and the veth (deleting either end removes both); idempotent. */
  destroy(): void {
    ipQuiet('netns', 'delete', this.namespace);
    if (linkExists(this.veth)) ipQuiet('link', 'delete', 'dev', this.veth);
  }
}

/** Runs a command inside network namespace `namespace` and returns its stdout. */
export function execInNamespace(
  namespace: string,
  command: string,
  args: string[],
  timeoutMs = 10_000,
): string {
  return execFileSync('ip', ['netns', 'exec', namespace, command, ...args], {
    encoding: 'utf8',
    timeout: timeoutMs,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** The bridge and the hosts on it. One per test file; `destroy()` in afterAll. */
export class TestNetwork {
  readonly bridge = BRIDGE;
  readonly bridgeAddress = BRIDGE_ADDRESS;
  private readonly hosts = new Map<number, TestHost>();

  /** Creates the bridge, after removing what a crashed earlier run left behind. */
  static create(): TestNetwork {
    if (existsSync(OWNER_FILE)) {
      const owner = Number(readFileSync(OWNER_FILE, 'utf8'));
      if (owner !== process.pid && alive(owner))
        throw new Error(`the test network ${BRIDGE} is in use by process ${owner}`);
    }
    writeFileSync(OWNER_FILE, String(process.pid));
    removeLeftovers();
    ip('link', 'add', 'name', BRIDGE, 'type', 'bridge');
    ip('addr', 'add', `${BRIDGE_ADDRESS}/24`, 'dev', BRIDGE);
    ip('link', 'set', 'dev', BRIDGE, 'up');
    return new TestNetwork();
  }

  /** Creates test host `n` (1..200): namespace `edge-t-<n>`, address 10.210.0.(10+n). */
  addHost(index: number): TestHost {
    if (!Number.isInteger(index) || index < 1 || index > 200) throw new Error(`bad host index ${index}`);
    const host = new TestHost(index);
    this.hosts.set(index, host);
    host.create();
    return host;
  }

  /** Lets the hosts reach each other's addresses across the bridge (overlay tunnels between workers). */
  allowHostToHost(): void {
    iptables('-I', ...HOST_TO_HOST_RULE);
  }

  /** Removes every host, the bridge and the owner mark; idempotent, safe after a partial set-up. */
  destroy(): void {
    for (const host of this.hosts.values()) host.destroy();
    this.hosts.clear();
    removeLeftovers();
    rmSync(OWNER_FILE, { force: true });
  }
}

/** Namespaces `edge-t-<n>`, root-side veths `vedge-t-<n>` and the bridge, whoever left them. */
function removeLeftovers(): void {
  for (const line of ip('netns', 'list').split('\n')) {
    const name = line.split(' ')[0];
    if (name && NAMESPACE.test(name)) ipQuiet('netns', 'delete', name);
  }
  for (const line of ip('-o', 'link', 'show').split('\n')) {
    const name = /^\d+:\s+([^:@\s]+)/.exec(line)?.[1];
    if (name && ROOT_VETH.test(name)) ipQuiet('link', 'delete', 'dev', name);
  }
  if (linkExists(BRIDGE)) ipQuiet('link', 'delete', 'dev', BRIDGE);
  for (let i = 0; i < 10; i++) {
    try {
      iptables('-D', ...HOST_TO_HOST_RULE);
    } catch {
      break;
    }
  }
}
