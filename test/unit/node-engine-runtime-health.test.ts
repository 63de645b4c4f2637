import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { RuntimeHealth } from '../../node-engine/runtime-health.js';
import type { Runtime, RuntimeProbe } from '../../node-engine/runtimes/runtime.js';

/** A runtime whose probe answers what the test says; nothing else of it is used. */
function scripted(): { runtime: Runtime; answer: RuntimeProbe } {
  const state = { answer: 'up' as RuntimeProbe, runtime: undefined as unknown as Runtime };
  state.runtime = { technology: 'docker', probe: async () => state.answer } as unknown as Runtime;
  return state;
}

describe('runtime health', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
  });

  it('tells exits in an outage (from the last good probe to the first one after) from others', async () => {
    let now = 1_000_000;
    // The monotonic clock: runs with the wall clock here, 5,000 s apart.
    const mono = () => now - 5_000_000;
    const docker = scripted();
    const changes: string[] = [];
    const health = new RuntimeHealth({
      runtimes: [docker.runtime],
      logger: pino({ level: 'silent' }),
      wallClock: () => now,
      clock: mono,
      onChange: (technology, up) => changes.push(`${technology} ${up ? 'up' : 'down'}`),
    });
    await health.probe();
    expect(health.available()).toEqual(['docker']);
    now += 2000;
    await health.probe(); // last good probe at 1_002_000 (monotonic -3_998_000)
    expect(health.confirmedUpAfter('docker', -3_998_000)).toBe(true);
    expect(health.confirmedUpAfter('docker', -3_997_999)).toBe(false);
    now += 2000;
    docker.answer = 'down';
    await health.probe();
    expect(health.isUp('docker')).toBe(false);
    expect(health.available()).toEqual([]);
    // Down since the last good probe: an exit after it was (or may have been) dockerd's doing.
    expect(health.stoppedWithRuntime('docker', 1_002_500)).toBe(true);
    expect(health.stoppedWithRuntime('docker', 1_001_999)).toBe(false);
    now += 30_000;
    docker.answer = 'up';
    await health.probe(); // back at 1_034_000
    expect(health.stoppedWithRuntime('docker', 1_034_000)).toBe(true);
    expect(health.stoppedWithRuntime('docker', 1_034_001)).toBe(false);
    expect(changes).toEqual(['docker up', 'docker down', 'docker up']);
  });

  it('does not take a daemon that is only slow to answer for one that stopped its workloads', async () => {
    let now = 1_000_000;
    const docker = scripted();
    const health = new RuntimeHealth({
      runtimes: [docker.runtime],
      logger: pino({ level: 'silent' }),
      wallClock: () => now,
    });
    await health.probe();
    now += 2000;
    docker.answer = 'unresponsive';
    await health.probe();
    expect(health.isUp('docker')).toBe(false);
    now += 2000;
    docker.answer = 'up';
    await health.probe();
    expect(health.stoppedWithRuntime('docker', 1_001_000)).toBe(false);
  });

  it('knows after a restart of its own since when a runtime it finds down has been away', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'runtime-health-'));
    dirs.push(dataDir);
    let now = 1_000_000;
    const docker = scripted();
    const logger = pino({ level: 'silent' });
    const first = new RuntimeHealth({ runtimes: [docker.runtime], logger, wallClock: () => now, dataDir });
    await first.probe();
    now += 5000;
    await first.stop(); // up until 1_005_000, as far as the first process knows
    now += 60_000;
    docker.answer = 'down';
    const second = new RuntimeHealth({ runtimes: [docker.runtime], logger, wallClock: () => now, dataDir });
    await second.probe();
    expect(second.stoppedWithRuntime('docker', 1_010_000)).toBe(true);
    expect(second.stoppedWithRuntime('docker', 1_004_000)).toBe(false);
  });

  it('takes what stopped between the last time a runtime was seen up and a reboot since for the reboot', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'runtime-health-'));
    dirs.push(dataDir);
    let now = 1_000_000;
    const docker = scripted();
    const logger = pino({ level: 'silent' });
    const before = new RuntimeHealth({ runtimes: [docker.runtime], logger, wallClock: () => now, dataDir });
    await before.probe();
    await before.stop(); // last seen up at 1_000_000; then a power cut
    now = 1_100_000;
    const booted = new RuntimeHealth({
      runtimes: [docker.runtime],
      logger,
      wallClock: () => now,
      dataDir,
      bootedAt: 1_090_000,
    });
    await booted.probe(); // dockerd is up again, with every container stopped
    expect(booted.stoppedWithRuntime('docker', 1_050_000)).toBe(true);
    expect(booted.stoppedWithRuntime('docker', 1_095_000)).toBe(true);
    expect(booted.stoppedWithRuntime('docker', 1_100_001)).toBe(false);
    // Without a reboot in between, the same gap is not an outage (the node engine alone was away).
    const otherDir = await mkdtemp(join(tmpdir(), 'runtime-health-'));
    dirs.push(otherDir);
    await writeFile(join(otherDir, 'runtime-health.json'), JSON.stringify({ docker: 1_000_000 }));
    const restarted = new RuntimeHealth({
      runtimes: [docker.runtime],
      logger,
      wallClock: () => now,
      dataDir: otherDir,
      bootedAt: 900_000,
    });
    await restarted.probe();
    expect(restarted.stoppedWithRuntime('docker', 1_050_000)).toBe(false);
  });
});
