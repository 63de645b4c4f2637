import { type Logger, numberToIp, parseCidr } from '../../shared/index.js';
import { addressPoolExhausted } from '../errors.js';
import type { Store } from '../store/index.js';
import type { AddressPlan } from './address-plan.js';
import { allocate, blockCidr, freeBlocks, inPool, PoolExhaustedError } from './address-pool.js';

/**
 * Hands out the overlay's addresses, keeping them in SQLite (unique indexes make a duplicate impossible):
 * a `/26` per worker with a net manager, a service IP per job and an instance IP per instance. An address is
 * free again once the row that holds it is gone, and the lowest free one is handed out first.
 */
export class OverlayAddresses {
  constructor(
    private readonly store: Store,
    readonly plan: AddressPlan,
    private readonly logger: Logger,
  ) {}

  /**
   * Call inside the transaction that stores them: `count` addresses from the service subnet, lowest first.
   * Throws a 409 ClientError when fewer are free, so the job or scale-up is refused whole.
   */
  take(count: number): string[] {
    try {
      return allocate(this.plan.serviceAddresses, this.store.jobs.usedAddressNumbers(), count).map(
        numberToIp,
      );
    } catch (error) {
      if (error instanceof PoolExhaustedError) throw addressPoolExhausted(error.message);
      throw error;
    }
  }

  /**
   * Call inside a transaction. The node's worker subnet: the one it was given before (kept for good, also when
   * it later registers without a net manager), else the lowest free `/26` when it runs a net manager now.
   * Null when it needs none, or none is free: then it runs with the overlay off, which the log and the events say.
   */
  subnetFor(nodeId: string, overlay: boolean): string | null {
    const node = this.store.nodes.get(nodeId);
    if (!node) return null;
    if (node.subnet || !overlay) return node.subnet;
    const pool = this.plan.workerSubnets;
    const used = new Set(this.store.nodes.subnets().map((subnet) => parseCidr(subnet).first));
    const [start] = freeBlocks(pool, used, 1);
    if (start === undefined) {
      const message = `no worker subnet left for node ${node.name}: ${new PoolExhaustedError(pool, 1, 0).message}; it runs with the overlay off`;
      this.logger.error({ nodeId }, message);
      this.store.events.record('overlay.exhausted', message, { nodeId });
      return null;
    }
    const subnet = blockCidr(pool, start);
    this.store.nodes.setSubnet(nodeId, subnet);
    this.store.events.record('node.subnet', `node ${node.name} got worker subnet ${subnet}`, { nodeId });
    return subnet;
  }

  /**
   * Gives addresses to live jobs and instances that have none (made by a version without the overlay, or while
   * the pool was full). What does not fit keeps running without overlay addresses, and the log says so.
   */
  backfill(): void {
    this.store.transaction(() => {
      const jobs = this.store.jobs.listJobs().filter((job) => job.state === 'active');
      const live = new Set(jobs.map((job) => job.id));
      const jobsMissing = jobs.filter((job) => !job.serviceIp);
      const instancesMissing = this.store.jobs
        .allInstances()
        .filter((instance) => live.has(instance.jobId) && !instance.instanceIp);
      const wanted = jobsMissing.length + instancesMissing.length;
      const used = this.store.jobs.usedAddressNumbers();
      this.warnAboutStrays(used);
      if (wanted === 0) return;
      const free = freeBlocks(this.plan.serviceAddresses, used, wanted).map(numberToIp);
      const given = free.length;
      for (const job of jobsMissing) {
        const ip = free.shift();
        if (ip) this.store.jobs.setServiceIp(job.id, ip);
      }
      for (const instance of instancesMissing) {
        const ip = free.shift();
        if (ip) this.store.jobs.updateInstance({ ...instance, instanceIp: ip });
      }
      this.logger.info({ given, wanted }, 'gave overlay addresses to jobs and instances without one');
      if (given < wanted) {
        const message = `${wanted - given} job(s) or instance(s) got no overlay address: ${new PoolExhaustedError(this.plan.serviceAddresses, wanted, given).message}`;
        this.logger.error(message);
        this.store.events.record('overlay.exhausted', message);
      }
    });
  }

  /** Addresses handed out under other flags stay where they are (instance IPs are stable); say so once. */
  private warnAboutStrays(used: ReadonlySet<number>): void {
    const strays = [...used].filter((ip) => !inPool(this.plan.serviceAddresses, ip)).length;
    if (strays > 0)
      this.logger.warn({ strays }, 'overlay addresses outside --service-subnet are kept as they are');
  }
}
