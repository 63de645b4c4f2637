import { execSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImageGc } from '../../node-engine/runtimes/image-gc.js';
import { PrivateDockerd } from '../helpers/private-dockerd.js';

/**
 * Image garbage collection against a dockerd of the test's own (it removes images: never the machine's).
 * The disk's fill is injected; the images, containers and removals are real.
 */
describe('image garbage collection (a private dockerd)', () => {
  let dockerd: PrivateDockerd;
  let docker: Dockerode;
  let dir: string;
  const ids = new Map<string, string>();

  /** A tiny image of its own content, made with docker import (no registry here). */
  async function makeImage(name: string): Promise<void> {
    const root = join(dir, name.replace(/[/:]/g, '-'));
    await mkdir(root, { recursive: true });
    await writeFile(join(root, 'content'), name);
    execSync(`tar -C ${root} -c . | docker -H unix://${dockerd.socket} import - ${name}`, {
      stdio: 'ignore',
    });
    ids.set(name, dockerd.docker(['image', 'inspect', '--format', '{{.Id}}', name]).trim());
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ne-image-gc-'));
    dockerd = new PrivateDockerd();
    await dockerd.start();
    dockerd.load('edge/busybox:latest');
    docker = new Dockerode({ socketPath: dockerd.socket });
    // Created a second apart: the older unused one goes first.
    for (const name of ['edge/gc-oldest:1', 'edge/gc-older:1', 'edge/gc-stopped:1']) {
      await makeImage(name);
      await new Promise((resolve) => setTimeout(resolve, 1100));
    }
    dockerd.docker(['tag', 'edge/gc-older:1', 'edge/gc-older:also']);
    dockerd.docker(['run', '-d', '--name', 'runs', 'edge/busybox:latest', 'sleep', '3600']);
    dockerd.docker(['create', '--name', 'stopped', 'edge/gc-stopped:1', '/content']);
  }, 90_000);

  afterAll(async () => {
    await dockerd?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  const present = async () => new Set((await docker.listImages()).map((image) => image.Id));

  it('removes nothing while the disk is below the high mark', async () => {
    const gc = new ImageGc({
      docker,
      logger: pino({ level: 'silent' }),
      highPercent: 85,
      lowPercent: 80,
      usedPercent: async () => 85,
    });
    expect(await gc.collect()).toEqual([]);
  });

  it('removes unused images, least recently used first, until the low mark; never one a container uses', async () => {
    // Each of the two unused images holds 6 points of the disk: 86 with both (past the high mark), 80 with one
    // (the low mark: done).
    const unused = ['edge/gc-oldest:1', 'edge/gc-older:1'].map((name) => ids.get(name)!);
    const gc = new ImageGc({
      docker,
      logger: pino({ level: 'silent' }),
      highPercent: 85,
      lowPercent: 80,
      usedPercent: async () => {
        const now = await present();
        return 74 + 6 * unused.filter((id) => now.has(id)).length;
      },
    });
    expect(await gc.collect()).toEqual([unused[0]]);
    expect((await present()).has(unused[1]!)).toBe(true);

    // Far too full for good: every unused image goes (one tagged twice too), and only those.
    const desperate = new ImageGc({
      docker,
      logger: pino({ level: 'silent' }),
      highPercent: 85,
      lowPercent: 80,
      usedPercent: async () => 99,
    });
    expect(await desperate.collect()).toEqual([unused[1]]);
    const left = await present();
    expect(left.has(ids.get('edge/gc-stopped:1')!)).toBe(true);
    expect(left.size).toBe(2);
    expect(await desperate.collect()).toEqual([]);
    expect(dockerd.docker(['ps', '-a', '--format', '{{.Names}}']).split('\n').filter(Boolean).sort()).toEqual(
      ['runs', 'stopped'],
    );
  });
});
