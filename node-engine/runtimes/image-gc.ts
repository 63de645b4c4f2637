import { statfs } from 'node:fs/promises';
import type Dockerode from 'dockerode';
import type { Logger } from '../../shared/index.js';
import { withDeadline } from '../deadline.js';

export interface ImageGcOptions {
  docker: Dockerode;
  logger: Logger;
  /** Collect when the filesystem of Docker's root dir is fuller than this (percent). */
  highPercent: number;
  /** ... until it is at most this full, or nothing unused is left. */
  lowPercent: number;
  /** How often the disk is looked at. */
  intervalMs?: number;
  /** How full a filesystem is, in percent (tests inject one). */
  usedPercent?: (path: string) => Promise<number>;
  now?: () => number;
}

/** Longest a Docker call of the collector may take. */
const CALL_TIMEOUT_MS = 60_000;

async function statfsPercent(path: string): Promise<number> {
  const disk = await statfs(path);
  return disk.blocks === 0 ? 0 : ((disk.blocks - disk.bavail) / disk.blocks) * 100;
}

/**
 * Image garbage collection by disk use, as the kubelet does it: when the filesystem Docker keeps its images on is
 * fuller than `highPercent`, images no container uses (running or stopped, ours or not) are removed, least
 * recently used first, until it is at most `lowPercent` full. An image counts as used when a container of it was
 * last seen; one never seen in use goes by its creation time.
 */
export class ImageGc {
  private readonly lastUsed = new Map<string, number>();
  private readonly usedPercent: (path: string) => Promise<number>;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(private readonly options: ImageGcOptions) {
    this.usedPercent = options.usedPercent ?? statfsPercent;
    this.now = options.now ?? Date.now;
  }

  start(): void {
    this.timer ??= setInterval(() => void this.collectSoon(), this.options.intervalMs ?? 5 * 60_000);
    this.timer.unref?.();
    void this.collectSoon();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One collection at a time; failures are logged (Docker away: the next round tries again). */
  private collectSoon(): Promise<unknown> {
    this.running ??= this.collect()
      .catch((error: Error) => this.options.logger.warn({ err: error.message }, 'image collection failed'))
      .finally(() => {
        this.running = undefined;
      });
    return this.running;
  }

  /** Looks at the disk, and removes unused images if it is too full. Returns the ids removed. */
  async collect(): Promise<string[]> {
    const { docker, logger, highPercent, lowPercent } = this.options;
    const call = <T>(what: string, run: () => Promise<T>) =>
      withDeadline(`docker ${what}`, CALL_TIMEOUT_MS, run);
    const info = (await call('info', () => docker.info())) as { DockerRootDir?: string };
    const root = info.DockerRootDir ?? '/var/lib/docker';
    const containers = await call('list', () => docker.listContainers({ all: true }));
    const inUse = new Set(containers.map((container) => container.ImageID));
    const now = this.now();
    for (const id of inUse) this.lastUsed.set(id, now);
    let used = await this.usedPercent(root);
    if (used <= highPercent) return [];
    const images = await call('images', () => docker.listImages());
    const unused = images
      .filter((image) => !inUse.has(image.Id))
      .sort(
        (a, b) =>
          (this.lastUsed.get(a.Id) ?? a.Created * 1000) - (this.lastUsed.get(b.Id) ?? b.Created * 1000),
      );
    const removed: string[] = [];
    for (const image of unused) {
      if (used <= lowPercent) break;
      try {
        // Forced only past its several tags: Docker still refuses an image a container uses.
        await call('image remove', () => docker.getImage(image.Id).remove({ force: true }));
        removed.push(image.Id);
        this.lastUsed.delete(image.Id);
      } catch (error) {
        logger.warn({ image: image.Id, err: (error as Error).message }, 'cannot remove an unused image');
      }
      used = await this.usedPercent(root);
    }
    logger.info(
      { removed: removed.length, usedPercent: Math.round(used) },
      'removed unused images: disk too full',
    );
    return removed;
  }
}
