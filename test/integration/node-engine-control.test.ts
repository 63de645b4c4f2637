import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Aedes } from 'aedes';
import Dockerode from 'dockerode';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommandHandler } from '../../node-engine/control/command-handler.js';
import { MqttLink } from '../../node-engine/mqtt-link.js';
import { Reconciler } from '../../node-engine/reconciler.js';
import { DockerRuntime } from '../../node-engine/runtimes/docker.js';
import { DesiredStateStore } from '../../node-engine/state/desired-state.js';
import {
  type Command,
  type CommandAck,
  CommandAckSchema,
  type InstanceStatusReport,
  InstanceStatusReportSchema,
  refusedByAllowances,
  topics,
} from '../../shared/index.js';

const nodeId = `ne-control-test-${process.pid}`;
const logger = pino({ level: 'silent' });
const docker = new Dockerode({ socketPath: '/var/run/docker.sock' });

let broker: Aedes;
let server: Server;
let url: string;
let dataDir: string;
let link: MqttLink;
let reconciler: Reconciler;
let operator: mqtt.MqttClient;
const acks: CommandAck[] = [];
const reports: InstanceStatusReport[] = [];

const job = {
  id: 'job-ctl',
  name: 'ctl',
  image: 'edge/busybox:latest',
  command: ['sleep', '3600'],
  resources: { cpus: 0.25, memoryMB: 32 },
};

function command(overrides: Partial<Command> & Pick<Command, 'command'>): Command {
  return {
    id: randomUUID(),
    job: job as Command['job'],
    instance: 0,
    generation: 1,
    cluster: ['c1'],
    worker: [nodeId],
    issuedAt: Date.now(),
    ...overrides,
  };
}

async function waitFor<T>(what: string, probe: () => T | undefined | false, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function containers(): Array<{ Id: string; Labels: Record<string, string> }> {
  const out = execFileSync(
    'docker',
    ['ps', '--no-trunc', '--filter', `label=edge.node=${nodeId}`, '--format', '{{.ID}} {{.Labels}}'],
    { encoding: 'utf8' },
  );
  return out
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [id = '', labels = ''] = line.split(' ');
      return { Id: id, Labels: Object.fromEntries(labels.split(',').map((kv) => kv.split('='))) };
    });
}

async function removeContainers(): Promise<void> {
  const list = await docker.listContainers({ all: true, filters: { label: [`edge.node=${nodeId}`] } });
  await Promise.all(
    list.map((c) =>
      docker
        .getContainer(c.Id)
        .remove({ force: true })
        .catch(() => undefined),
    ),
  );
}

function send(cmd: Command | string): void {
  operator.publish(topics.control(nodeId), typeof cmd === 'string' ? cmd : JSON.stringify(cmd), { qos: 1 });
}

describe('node engine control path (aedes + dockerd)', () => {
  beforeAll(async () => {
    broker = await Aedes.createBroker();
    server = createServer(broker.handle);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    if (!address || typeof address === 'string') throw new Error('no broker address');
    url = `mqtt://127.0.0.1:${address.port}`;
    dataDir = await mkdtemp(join(tmpdir(), 'ne-control-'));

    const store = await DesiredStateStore.load(dataDir, nodeId);
    const runtime = new DockerRuntime({ docker, nodeId, logger, stopTimeoutS: 1 });
    reconciler = new Reconciler({ nodeId, store, runtimes: [runtime], logger, periodMs: 1000 });
    let handler: CommandHandler | undefined;
    link = new MqttLink({
      nodeId,
      settings: { url, username: 'node', password: 'secret' },
      logger,
      onCommand: (payload) => void handler?.handle(payload),
    });
    handler = new CommandHandler({
      store,
      // As the node engine wires it: this node allows /dev/null to containers and no native executable.
      refusal: (refused) => refusedByAllowances(refused, { native: [], devices: ['/dev/null'] }),
      ack: (ack) => link.publishAck(ack),
      onChange: () => reconciler.trigger(),
      logger,
    });
    reconciler.statuses.onChange((report) => link.publishStatus(report));
    reconciler.start();

    operator = await mqtt.connectAsync(url, { protocolVersion: 4, clientId: `operator-${process.pid}` });
    operator.on('message', (topic, payload) => {
      const data = JSON.parse(payload.toString());
      if (topic === topics.controlAck(nodeId)) acks.push(CommandAckSchema.parse(data));
      if (topic === topics.jobStatus(nodeId)) reports.push(InstanceStatusReportSchema.parse(data));
    });
    await operator.subscribeAsync([topics.controlAck(nodeId), topics.jobStatus(nodeId)], { qos: 1 });
    await waitFor('the node to connect', () => link.connected);
  });

  afterAll(async () => {
    await reconciler?.stop();
    await link?.close();
    await operator?.endAsync();
    await removeContainers();
    await new Promise<void>((resolve) => broker.close(() => resolve()));
    server?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('deploys, dedups, deletes and ignores stale and malformed commands', async () => {
    const retained = await new Promise<string>((resolve) => {
      const probe = mqtt.connect(url, { protocolVersion: 4 });
      probe.on('message', (_topic, payload) => {
        resolve(payload.toString());
        probe.end();
      });
      probe.subscribe(topics.status(nodeId));
    });
    expect(retained).toBe('online');

    const deploy = command({ command: 'deploy', generation: 2 });
    send(deploy);
    await waitFor('the deploy ack', () => acks.find((a) => a.id === deploy.id));
    expect(acks.find((a) => a.id === deploy.id)).toEqual({ id: deploy.id, ok: true });
    const running = await waitFor('a running report', () =>
      reports.find((r) => r.job === 'job-ctl' && r.status === 'running'),
    );
    expect(running).toMatchObject({ instance: 0, generation: 2, restarts: 0 });
    expect(running.containerId).toMatch(/^[0-9a-f]{64}$/);
    const [container] = containers();
    expect(container?.Id).toBe(running.containerId);
    expect(container?.Labels['edge.generation']).toBe('2');

    // The same command id again: acked again, nothing else happens.
    const reportsBefore = reports.length;
    send(deploy);
    await waitFor('the second ack', () => acks.filter((a) => a.id === deploy.id).length === 2);
    await reconciler.reconcileNow();
    await reconciler.idle();
    expect(containers()).toHaveLength(1);
    expect(reports.length).toBe(reportsBefore);

    // A malformed payload is dropped; the node keeps working.
    send('{not json');
    send(JSON.stringify({ id: 'bad-1', command: 'explode' }));
    await waitFor('a refusal of the bad command', () => acks.find((a) => a.id === 'bad-1'));
    expect(acks.find((a) => a.id === 'bad-1')).toMatchObject({
      ok: false,
      error: { code: 'invalid_command' },
    });

    const del = command({ command: 'delete', generation: 2 });
    send(del);
    await waitFor('the delete ack', () => acks.find((a) => a.id === del.id)?.ok);
    await waitFor('a stopped report', () =>
      reports.find((r) => r.status === 'stopped' && r.generation === 2),
    );
    expect(reports.some((r) => r.status === 'stopping')).toBe(true);
    await waitFor('the container to go', () => containers().length === 0);

    // A redelivered older deploy (new id, older generation) after the delete is acked and ignored.
    const stale = command({ command: 'deploy', generation: 1 });
    send(stale);
    await waitFor('the stale ack', () => acks.find((a) => a.id === stale.id));
    expect(acks.find((a) => a.id === stale.id)).toEqual({ id: stale.id, ok: true });
    await reconciler.reconcileNow();
    await reconciler.idle();
    expect(containers()).toHaveLength(0);
  });

  it('refuses a device or a native executable it does not allow, and runs nothing', async () => {
    const withDevice = command({
      command: 'deploy',
      generation: 3,
      job: { ...(job as Command['job']), devices: ['/dev/snd'] },
    });
    const native = command({
      command: 'deploy',
      generation: 4,
      job: { ...(job as Command['job']), technology: 'native', image: '/bin/sh' },
    });
    send(withDevice);
    send(native);
    await waitFor(
      'both refusals',
      () => acks.filter((a) => a.id === withDevice.id || a.id === native.id).length === 2,
    );
    expect(acks.find((a) => a.id === withDevice.id)).toEqual({
      id: withDevice.id,
      ok: false,
      error: { code: 'not_allowed', message: 'device /dev/snd not allowed (--allow-device)' },
    });
    expect(acks.find((a) => a.id === native.id)?.error?.message).toBe(
      'native /bin/sh not allowed (--allow-native)',
    );
    await reconciler.reconcileNow();
    await reconciler.idle();
    expect(containers()).toHaveLength(0);
    expect(reports.some((r) => r.generation === 3 || r.generation === 4)).toBe(false);
  });

  it('retries an unpullable image with back-off, never failing it, and runs it once the image is there', async () => {
    // No registry answers at 127.0.0.1:1: the pull fails at once, as with a registry that is away for a while.
    const image = `127.0.0.1:1/none/later-${process.pid}:1`;
    const deploy = command({
      command: 'deploy',
      job: { ...job, id: 'job-later', name: 'later', image } as Command['job'],
    });
    send(deploy);
    const mine = () => reports.filter((r) => r.job === 'job-later');
    const second = await waitFor('a second back-off', () =>
      mine().find((r) => /^back-off 2s: /.test(r.detail)),
    );
    expect(second.status).toBe('pulling');
    expect(second.detail).toMatch(/^back-off 2s: cannot pull image 127\.0\.0\.1:1\/none\/later-\d+:1/);
    expect(mine().find((r) => /^back-off 1s: /.test(r.detail))?.status).toBe('pulling');
    // The image appears (a registry came back, an operator loaded it): the next try runs it.
    execFileSync('docker', ['tag', 'edge/busybox:latest', image]);
    try {
      await waitFor('running once the image is there', () => mine().find((r) => r.status === 'running'));
    } finally {
      execFileSync('docker', ['rmi', image], { stdio: 'ignore' });
    }
    expect(mine().some((r) => r.status === 'failed')).toBe(false);
  });

  it('restarts an exited workload by its policy and gives up after maxRetries', async () => {
    const deploy = command({
      command: 'deploy',
      job: {
        ...job,
        id: 'job-crash',
        name: 'crash',
        command: ['sh', '-c', 'exit 4'],
        restart: { policy: 'on-failure', maxRetries: 1 },
      } as Command['job'],
    });
    send(deploy);
    const exited = await waitFor('an exited report', () =>
      reports.find((r) => r.job === 'job-crash' && r.status === 'exited'),
    );
    expect(exited.exitCode).toBe(4);
    expect(exited.detail).toMatch(/restart 1 due at/);
    const failed = await waitFor('a failed report', () =>
      reports.find((r) => r.job === 'job-crash' && r.status === 'failed'),
    );
    expect(failed).toMatchObject({ restarts: 1, exitCode: 4 });
    expect(failed.detail).toMatch(/gave up after 1 restarts/);
  });
});
