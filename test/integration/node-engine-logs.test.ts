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
import { LogStreams } from '../../node-engine/logs/log-streams.js';
import { MqttLink } from '../../node-engine/mqtt-link.js';
import { DockerRuntime } from '../../node-engine/runtimes/docker.js';
import { NativeRuntime } from '../../node-engine/runtimes/native.js';
import type { InstanceSpec, Runtime } from '../../node-engine/runtimes/runtime.js';
import {
  type JobDefinition,
  JobDefinitionSchema,
  LOG_CHUNK_BYTES,
  type LogControlInput,
  type LogStreamMessage,
  LogStreamMessageSchema,
  topics,
} from '../../shared/index.js';
import { removeContainersWithLabel } from '../helpers/docker.js';
import { waitFor } from '../helpers/wait.js';

const nodeId = `ne-logs-test-${process.pid}`;
const logger = pino({ level: 'silent' });

/**
 * The node's side of log streams, with a real broker, dockerd and native processes; the test client plays the
 * cluster manager on `nodes/<id>/logs/control`. Credit is exact here: the node sends no chunk beyond it and
 * reads nothing of the output meanwhile.
 */
describe('node engine log streams (aedes + dockerd + native processes)', () => {
  let broker: Aedes;
  let server: Server;
  let dataDir: string;
  let link: MqttLink;
  let streams: LogStreams;
  let docker: DockerRuntime;
  let native: NativeRuntime;
  let manager: mqtt.MqttClient;
  const received: LogStreamMessage[] = [];
  const handles: { runtime: Runtime; spec: InstanceSpec; id: string }[] = [];

  const send = (message: LogControlInput | string) =>
    manager.publishAsync(
      topics.logsControl(nodeId),
      typeof message === 'string' ? message : JSON.stringify(message),
    );
  const of = (requestId: string) => received.filter((message) => message.requestId === requestId);
  const chunks = (requestId: string) =>
    of(requestId).flatMap((message) => (message.type === 'chunk' ? [message] : []));
  const ended = (requestId: string) => of(requestId).find((message) => message.type === 'end');

  function spec(name: string, overrides: Record<string, unknown>): InstanceSpec {
    const job = JobDefinitionSchema.parse({ id: `job-${name}`, name, ...overrides }) as JobDefinition;
    return { nodeId, job, instance: 0, generation: 1 };
  }

  async function run(runtime: Runtime, instance: InstanceSpec): Promise<void> {
    const deployed = await runtime.deploy(instance, () => undefined);
    handles.push({ runtime, spec: instance, id: deployed.handle.id });
  }

  function open(job: string, options: Partial<Extract<LogControlInput, { type: 'open' }>> = {}): string {
    const requestId = randomUUID();
    void send({ type: 'open', requestId, job, instance: 0, follow: false, upTo: 100_000_000, ...options });
    return requestId;
  }

  beforeAll(async () => {
    broker = await Aedes.createBroker();
    server = createServer(broker.handle);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `mqtt://127.0.0.1:${(server.address() as { port: number }).port}`;
    dataDir = await mkdtemp(join(tmpdir(), 'ne-logs-'));
    docker = new DockerRuntime({
      docker: new Dockerode({ socketPath: '/var/run/docker.sock' }),
      nodeId,
      logger,
      stopTimeoutS: 1,
    });
    native = new NativeRuntime({ nodeId, dataDir, logger, stopTimeoutMs: 1000 });
    link = new MqttLink({
      nodeId,
      settings: { url, username: 'node', password: 'secret' },
      logger,
      onCommand: () => undefined,
      onLogControl: (payload) => streams.handle(payload),
    });
    streams = new LogStreams({
      runtimes: [docker, native],
      publish: (message) => link.publishLogStream(message),
      logger,
      maxStreams: 2,
      leaseMs: 1500,
    });
    manager = await mqtt.connectAsync(url, { protocolVersion: 4 });
    manager.on('message', (_topic, payload) =>
      received.push(LogStreamMessageSchema.parse(JSON.parse(payload.toString()))),
    );
    await manager.subscribeAsync(topics.logsStream(nodeId));
    await waitFor(() => link.connected, 'the node connected');
    // A burst of numbered lines far larger than a few chunks, then quiet: nothing changes while the test looks.
    await run(
      docker,
      spec('burst', {
        image: 'edge/busybox:latest',
        command: ['sh', '-c', 'busybox seq 1 100000; echo done; trap "exit 0" TERM; sleep 3600 & wait'],
      }),
    );
    await run(
      native,
      spec('native-burst', {
        technology: 'native',
        image: '/bin/sh',
        command: ['-c', 'seq 1 100000; echo done; echo also >&2; trap "exit 0" TERM; sleep 3600 & wait'],
      }),
    );
  });

  afterAll(async () => {
    streams?.closeAll();
    for (const { runtime, id } of handles)
      await runtime.remove({ technology: runtime.technology, id }).catch(() => undefined);
    removeContainersWithLabel(`edge.node=${nodeId}`);
    await manager?.endAsync(true);
    await link?.close(false);
    await new Promise<void>((resolve) => (broker ? broker.close(() => resolve()) : resolve()));
    server?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  /**
   * Asks for the whole output (not followed), renewing its lease as a cluster manager does, and waits for its end;
   * the text of each stream.
   */
  async function readAll(job: string): Promise<{ stdout: string; stderr: string; end: LogStreamMessage }> {
    const requestId = open(job);
    const keepalive = setInterval(() => void send({ type: 'credit', requestId, upTo: 100_000_000 }), 500);
    const end = await waitFor(() => ended(requestId), `the end of ${job}'s output`).finally(() =>
      clearInterval(keepalive),
    );
    const text = (stream: string) =>
      chunks(requestId)
        .filter((chunk) => chunk.stream === stream)
        .map((chunk) => chunk.data)
        .join('');
    return { stdout: text('stdout'), stderr: text('stderr'), end };
  }

  for (const [technology, job] of [
    ['docker', 'job-burst'],
    ['native', 'job-native-burst'],
  ] as const) {
    it(`sends no chunk beyond its credit, and reads no output meanwhile (${technology})`, async () => {
      // All of it written first (`done` comes last): what the node reads next is up to the credit alone.
      const whole = await waitFor(async () => {
        const all = await readAll(job);
        return all.stdout.endsWith('100000\ndone\n') && all;
      }, 'the whole output written');
      expect(whole.end).toMatchObject({ type: 'end', reason: 'eof' });
      expect(whole.stdout.length).toBeGreaterThan(20 * LOG_CHUNK_BYTES);
      // Each chunk says where it starts: the bytes before it.
      const firstChunks = chunks(whole.end.requestId);
      let offset = 0;
      for (const chunk of firstChunks) {
        expect(chunk.offset).toBe(offset);
        expect(Buffer.byteLength(chunk.data)).toBeLessThanOrEqual(LOG_CHUNK_BYTES);
        offset += Buffer.byteLength(chunk.data);
      }
      expect(whole.end).toMatchObject({ offset });

      const readBefore = streams.bytesRead;
      const credit = 3 * LOG_CHUNK_BYTES + 100;
      const requestId = open(job, { follow: true, streams: 'stdout', upTo: credit });
      const sent = () => chunks(requestId).reduce((total, chunk) => total + Buffer.byteLength(chunk.data), 0);
      await waitFor(
        () => sent() === credit && streams.waitingForCredit === 1,
        'the stream waiting for credit',
      );
      expect(of(requestId)[0]).toEqual({ type: 'opened', requestId, technology });
      // Not a byte read beyond the credit: the rest waits where the workload wrote it.
      expect(streams.bytesRead - readBefore).toBe(credit);

      // Credit is cumulative: a repeated or lower grant changes nothing, a higher one lets that much more go.
      await send({ type: 'credit', requestId, upTo: 2 });
      await send({ type: 'credit', requestId, upTo: credit * 2 });
      await waitFor(() => sent() === credit * 2 && streams.waitingForCredit === 1, 'as much again');
      expect(streams.bytesRead - readBefore).toBe(credit * 2);
      const text = chunks(requestId)
        .map((chunk) => chunk.data)
        .join('');
      expect(whole.stdout.startsWith(text)).toBe(true);

      await send({ type: 'cancel', requestId });
      await waitFor(() => ended(requestId), 'the end');
      expect(ended(requestId)).toEqual({ type: 'end', requestId, offset: credit * 2, reason: 'cancelled' });
      expect(streams.open).toBe(0);
    });
  }

  it('ends a stream whose lease is not renewed (its reader or cluster manager is gone)', async () => {
    const requestId = open('job-native-burst', { follow: true, tail: 1 });
    await waitFor(() => ended(requestId), 'the lease run out');
    expect(ended(requestId)).toMatchObject({ reason: 'lease' });
    expect(
      chunks(requestId)
        .map((chunk) => `${chunk.stream}: ${chunk.data}`)
        .sort(),
    ).toEqual(['stderr: also\n', 'stdout: done\n']);
    expect(streams.open).toBe(0);
  });

  it('answers what it cannot serve with an end that says why', async () => {
    const missing = open('job-nope');
    await waitFor(() => ended(missing), 'the refusal');
    expect(ended(missing)).toMatchObject({ reason: 'error', offset: 0, error: { code: 'not_found' } });

    const unknown = randomUUID();
    await send({ type: 'credit', requestId: unknown, upTo: 10 });
    await waitFor(() => ended(unknown), 'the answer to credit for no stream');
    expect(ended(unknown)).toMatchObject({ reason: 'error', error: { code: 'unknown_stream' } });

    // Two at most here: a third is refused, and the two go on.
    const first = open('job-burst', { follow: true, upTo: 1 });
    const second = open('job-native-burst', { follow: true, upTo: 1 });
    await waitFor(() => streams.waitingForCredit === 2, 'two streams open');
    const third = open('job-burst', { follow: true, upTo: 1 });
    await waitFor(() => ended(third), 'the third refused');
    expect(ended(third)).toMatchObject({ reason: 'error', error: { code: 'too_many_streams' } });
    expect(streams.open).toBe(2);
    for (const requestId of [first, second]) await send({ type: 'cancel', requestId });
    await waitFor(() => streams.open === 0, 'both cancelled');
  });

  it('drops malformed control messages with a log line and goes on serving', async () => {
    const malformed = randomUUID();
    for (const message of [
      'not json',
      '{}',
      JSON.stringify({
        type: 'open',
        requestId: 'not-a-uuid',
        job: 'job-burst',
        instance: 0,
        follow: false,
        upTo: 1,
      }),
      JSON.stringify({ type: 'credit', requestId: malformed, upTo: -1 }),
      JSON.stringify({
        type: 'open',
        requestId: malformed,
        job: 'job-burst',
        instance: 0,
        follow: 'yes',
        upTo: 1,
      }),
      JSON.stringify({ type: 'cancel', requestId: malformed, extra: true }),
    ])
      await send(message);
    const all = await readAll('job-native-burst');
    expect(all.end).toMatchObject({ reason: 'eof' });
    expect(all.stderr).toBe('also\n');
    expect(of(malformed)).toEqual([]);
    expect(streams.open).toBe(0);
  });
});
