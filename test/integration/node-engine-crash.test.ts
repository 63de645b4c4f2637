import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { topics } from '../../shared/index.js';
import { containersWithLabel, inspectContainer, removeContainersWithLabel } from '../helpers/docker.js';
import { WORKLOAD } from '../helpers/e2e-cluster.js';
import { FakeClusterManager } from '../helpers/fake-cluster-manager.js';
import type { Program } from '../helpers/programs.js';
import { waitFor } from '../helpers/wait.js';

const nodeId = `ne-crash-${process.pid}`;

/**
 * `kill -9` of the node engine (the built program, as start-up.sh runs it) at the two moments that matter for
 * exactly-once: after its durable write of a command but before its ack got out, and right after it started a
 * container. On restart it adopts what runs, starts nothing twice, and the command sent again (as the cluster
 * manager's outbox does until it hears an ack) is a no-op that is acked.
 *
 * The broker of the fake cluster manager holds the node's acks when told to: they never get through, which is
 * the state a crash between the write and the ack leaves.
 */
describe('node engine killed between its durable write and its ack, and right after a start', () => {
  const cm = new FakeClusterManager(nodeId);
  let dataDir: string;
  let engine: Program | undefined;
  let heldAcks = 0;

  beforeAll(async () => {
    await cm.start();
    dataDir = await mkdtemp(join(tmpdir(), 'ne-crash-'));
  });

  afterAll(async () => {
    await engine?.stop();
    await cm.stop();
    removeContainersWithLabel(`edge.node=${nodeId}`);
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  const containersOf = (job: string) => containersWithLabel(`edge.job=${job}`);
  const desiredState = async () => readFile(join(dataDir, 'desired-state.json'), 'utf8').catch(() => '');
  const ackOf = (id: string) => cm.acks.filter((ack) => ack.id === id);
  const reportedRunning = (job: string, after: number) =>
    cm.reports.slice(after).some((report) => report.job === job && report.status === 'running');

  it('after the durable write, before the ack: on restart the command sent again is acked and runs once', async () => {
    engine = await cm.startEngine(dataDir);
    const command = cm.deploy('crash-before-ack', { image: 'edge/busybox:latest', command: WORKLOAD });
    cm.admit = (topic) => {
      if (topic !== topics.controlAck(nodeId)) return true;
      heldAcks++;
      return false;
    };
    await cm.send(command);
    // The node acks only once its write is durable: an ack held at the broker means the write is done.
    await waitFor(() => heldAcks > 0, 'the ack, held at the broker');
    await engine.crash();
    cm.admit = () => true;
    expect(await desiredState()).toContain(command.id);
    expect(ackOf(command.id)).toEqual([]);

    const reports = cm.reports.length;
    engine = await cm.startEngine(dataDir);
    await cm.send(command);
    await waitFor(() => ackOf(command.id).length > 0, 'the ack of the command sent again');
    expect(ackOf(command.id)).toEqual([{ id: command.id, ok: true }]);
    await waitFor(() => reportedRunning('crash-before-ack', reports), 'the instance reported running');
    const [container] = containersOf('crash-before-ack');
    expect(container?.state).toBe('running');
    // Nothing is started twice: a moment later there is still one container, never restarted.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    expect(containersOf('crash-before-ack').map((c) => c.id)).toEqual([container!.id]);
    expect(inspectContainer(container!.id).RestartCount).toBe(0);
  });

  it('right after a container started: on restart it adopts the container, and the command sent again changes nothing', async () => {
    const command = cm.deploy('crash-after-start', { image: 'edge/busybox:latest', command: WORKLOAD });
    await cm.send(command);
    const started = await waitFor(
      () => containersOf('crash-after-start').find((c) => c.state === 'running'),
      'the container running',
      20_000,
      10,
    );
    await engine!.crash();
    const startedAt = inspectContainer(started.id).State.StartedAt;

    const reports = cm.reports.length;
    engine = await cm.startEngine(dataDir);
    await cm.send(command);
    await waitFor(() => ackOf(command.id).length >= 2, 'the second ack');
    await waitFor(() => reportedRunning('crash-after-start', reports), 'the instance reported running');
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const containers = containersOf('crash-after-start');
    expect(containers.map((c) => [c.id, c.state])).toEqual([[started.id, 'running']]);
    // The same process, never restarted.
    expect(inspectContainer(started.id)).toMatchObject({ State: { StartedAt: startedAt }, RestartCount: 0 });
  });
});
