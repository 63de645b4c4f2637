import type { Logger } from '../shared/index.js';
import type { NetManagerLink } from './net-manager-link.js';
import type { DesiredInstance } from './state/desired-state.js';

interface Attachment {
  pid: number;
  namespaceIp: string;
  /** The net manager (its boot id) the node was handed over to when the attach started. */
  bootId: string | undefined;
}

/**
 * Which containers are joined to the overlay, per start of the container (its pid) and per start of the net
 * manager (its boot id): a container that restarts gets a new network namespace, and a net manager that
 * restarts has lost its links; either way the container is attached again. An attach that was under way
 * while the net manager changed counts for the old one, so it is made again too.
 */
export class OverlayAttachments {
  private readonly attached = new Map<string, Attachment>();

  constructor(
    private readonly link: NetManagerLink,
    private readonly logger: Logger,
  ) {}

  /** Whether this instance joins the overlay: the overlay is on, it is a container, and it has addresses. */
  wanted(desired: DesiredInstance): boolean {
    return this.link.overlay && desired.job.technology === 'docker' && desired.network !== undefined;
  }

  /** The namespace IP of this start of the container, if it is attached. */
  namespaceIp(containerId: string, pid: number): string | undefined {
    const attachment = this.attached.get(containerId);
    const current = attachment?.pid === pid && attachment.bootId === this.link.bootId;
    return current ? attachment.namespaceIp : undefined;
  }

  async attach(desired: DesiredInstance, containerId: string, pid: number): Promise<string> {
    const network = desired.network;
    if (!network) throw new Error('the instance has no overlay addresses');
    const bootId = this.link.bootId;
    const namespaceIp = await this.link.attach({
      containerId,
      pid,
      jobId: desired.job.id,
      jobName: desired.job.name,
      instance: desired.instance,
      instanceIp: network.instanceIp,
      serviceIp: network.serviceIp,
    });
    this.attached.set(containerId, { pid, namespaceIp, bootId });
    this.logger.info(
      { job: desired.job.name, instance: desired.instance, namespaceIp, instanceIp: network.instanceIp },
      'joined the overlay',
    );
    return namespaceIp;
  }

  /** The container is gone: its namespace IP goes back to the net manager. Failures are logged, not thrown. */
  async detach(containerId: string): Promise<void> {
    const known = this.attached.delete(containerId);
    if (!known && !this.link.overlay) return;
    await this.link.detach(containerId).catch((error: Error) => {
      this.logger.warn({ containerId, err: error.message }, 'cannot detach from the overlay');
    });
  }
}
