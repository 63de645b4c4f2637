import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { disableIpv6 } from './disable-ipv6.js';
import { CommandError, type CommandRunner } from './ip-command.js';

/** The name of the overlay interface inside a container (its eth0 stays Docker's). */
export const CONTAINER_INTERFACE = 'edge0';
/** Host-side veths are `ve-` + 12 hex characters (Docker's short container id): 15, the kernel's limit. */
export const OVERLAY_VETH = /^ve-[0-9a-f]{12}$/;

/** The host-side veth of a container: `ve-<short id>`, or a hash for ids that are not hex. */
export function vethNameFor(containerId: string): string {
  const shortId =
    /^[0-9a-f]{12}/i.exec(containerId)?.[0]?.toLowerCase() ??
    createHash('sha256').update(containerId).digest('hex').slice(0, 12);
  return `ve-${shortId}`;
}

export type AttachErrorCode = 'container_gone' | 'interface_taken' | 'shares_worker_network' | 'failed';

/** An attach that cannot be done, with the reason a caller can act on. */
export class AttachError extends Error {
  override name = 'AttachError';
  constructor(
    readonly code: AttachErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface ContainerLinkOptions {
  /** Runs commands in the worker's network namespace (containers are entered from there). */
  runner: CommandRunner;
  bridge?: string;
  mtu?: number;
  overlayRoute?: string;
}

export interface AttachSpec {
  containerId: string;
  /** A process in the container's network namespace (Docker's `State.Pid`). */
  pid: number;
  namespaceIp: string;
  /** The bridge's address, the container's next hop into the overlay. */
  gateway: string;
  /** Of the worker subnet (26). */
  prefixLength: number;
}

export interface AttachResult {
  veth: string;
  interface: string;
  /** It was attached with this address already: nothing new was created. */
  alreadyAttached: boolean;
}

/** The fields of `ip -j addr show` / `ip -j link show` this code reads. */
interface IpLink {
  ifindex: number;
  ifname: string;
  link_index?: number;
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

/**
 * Joins a container to the worker's bridge with a veth pair: `ve-<id>` on the bridge, `edge0` inside the
 * container with its namespace IP and a route for the overlay via the gateway. The container's eth0 and default
 * route stay Docker's. Commands inside the container run through `nsenter -t <pid> -n` (util-linux).
 */
export class ContainerLink {
  private readonly runner: CommandRunner;
  private readonly bridge: string;
  /** The MTU of the veths of containers attached from now on. */
  mtu: number;
  private readonly overlayRoute: string;

  constructor(options: ContainerLinkOptions) {
    this.runner = options.runner;
    this.bridge = options.bridge ?? 'edgebr0';
    this.mtu = options.mtu ?? 1450;
    this.overlayRoute = options.overlayRoute ?? '10.16.0.0/12';
  }

  /** Attaches a container; attaching one already attached re-asserts its settings and succeeds. */
  async attach(spec: AttachSpec): Promise<AttachResult> {
    if (!Number.isInteger(spec.pid) || spec.pid <= 0) {
      throw new AttachError(
        'container_gone',
        `container ${spec.containerId} has no process (pid ${spec.pid})`,
      );
    }
    const veth = vethNameFor(spec.containerId);
    const inside = this.runner.inNetworkOf(spec.pid);
    const [containerLinks, hostLink] = await Promise.all([
      this.guard(spec, () => inside.ipJson<IpLink>(['addr', 'show'])),
      this.hostLink(veth),
    ]);
    if (containerLinks.some((link) => link.ifname === this.bridge)) {
      throw new AttachError(
        'shares_worker_network',
        `container ${spec.containerId} (pid ${spec.pid}) shares the worker's network namespace (host networking?): not attached`,
      );
    }
    const address = `${spec.namespaceIp}/${spec.prefixLength}`;
    const containerSide = [
      `link set dev ${CONTAINER_INTERFACE} up`,
      `route replace ${this.overlayRoute} via ${spec.gateway} dev ${CONTAINER_INTERFACE}`,
    ];
    const hostSide = [`link set dev ${veth} master ${this.bridge} up`];
    // Both ends IPv4-only before edge0 comes up (the host end has no carrier until then).
    const ipv6Off = () =>
      Promise.all([disableIpv6(this.runner, [veth]), disableIpv6(inside, [CONTAINER_INTERFACE])]);

    const existing = containerLinks.find((link) => link.ifname === CONTAINER_INTERFACE);
    if (existing) {
      if (!hostLink || existing.link_index !== hostLink.ifindex) {
        throw new AttachError(
          'interface_taken',
          `container ${spec.containerId} already has an interface ${CONTAINER_INTERFACE} that is not an overlay link`,
        );
      }
      const hasAddress = existing.addr_info?.some(
        (info) =>
          info.family === 'inet' && info.local === spec.namespaceIp && info.prefixlen === spec.prefixLength,
      );
      const readdress = hasAddress
        ? []
        : [`addr flush dev ${CONTAINER_INTERFACE}`, `addr add ${address} dev ${CONTAINER_INTERFACE}`];
      await this.guard(spec, ipv6Off);
      await this.guard(spec, () => this.runner.ipBatch(hostSide));
      await this.guard(spec, () => inside.ipBatch([...readdress, ...containerSide]));
      return { veth, interface: CONTAINER_INTERFACE, alreadyAttached: hasAddress === true };
    }

    // A host end whose peer is not in this container belongs to an earlier life of it: start afresh.
    if (hostLink) await this.runner.ipBatch([`link del dev ${veth}`]);
    await this.guard(spec, () =>
      this.runner.ipBatch([
        `link add ${veth} mtu ${this.mtu} type veth peer name ${CONTAINER_INTERFACE} mtu ${this.mtu} netns ${spec.pid}`,
        ...hostSide,
      ]),
    );
    try {
      await this.guard(spec, ipv6Off);
      await this.guard(spec, () =>
        inside.ipBatch([`addr add ${address} dev ${CONTAINER_INTERFACE}`, ...containerSide]),
      );
    } catch (error) {
      await this.detach(spec.containerId).catch(() => undefined);
      throw error;
    }
    return { veth, interface: CONTAINER_INTERFACE, alreadyAttached: false };
  }

  /** Deletes the container's veth pair (both ends go together); fine when it is gone already. */
  async detach(containerId: string): Promise<void> {
    try {
      await this.runner.ip(['link', 'del', 'dev', vethNameFor(containerId)]);
    } catch (error) {
      if (!(error instanceof CommandError && isNoSuchDevice(error))) throw error;
    }
  }

  /** The host-side overlay veths that exist now. */
  attachedVeths(): Promise<string[]> {
    return listOverlayVeths(this.runner);
  }

  private async hostLink(veth: string): Promise<IpLink | undefined> {
    try {
      return (await this.runner.ipJson<IpLink>(['link', 'show', 'dev', veth]))[0];
    } catch (error) {
      if (error instanceof CommandError && isNoSuchDevice(error)) return undefined;
      throw error;
    }
  }

  /** Runs a step, turning the failures a dead container causes into one clear error. */
  private async guard<T>(spec: AttachSpec, step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (error) {
      if (!existsSync(`/proc/${spec.pid}/ns/net`)) {
        throw new AttachError(
          'container_gone',
          `container ${spec.containerId} is not running: its process ${spec.pid} is gone`,
          { cause: error },
        );
      }
      if (error instanceof CommandError) {
        throw new AttachError('failed', `attaching container ${spec.containerId}: ${error.message}`, {
          cause: error,
        });
      }
      throw error;
    }
  }
}

/** The overlay veths (`ve-<12 hex>`) in the runner's namespace. */
export async function listOverlayVeths(runner: CommandRunner): Promise<string[]> {
  const links = await runner.ipJson<IpLink>(['link', 'show', 'type', 'veth']);
  return links.map((link) => link.ifname).filter((name) => OVERLAY_VETH.test(name));
}

function isNoSuchDevice(error: CommandError): boolean {
  return /does not exist|Cannot find device/.test(error.stderr);
}
