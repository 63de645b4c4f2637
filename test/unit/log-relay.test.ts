import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { ClientError } from '../../cluster-manager/errors.js';
import { LogRelay, type LogRequest } from '../../cluster-manager/logs/log-relay.js';
import {
  LOG_CREDIT_BYTES,
  LOG_KEEPALIVE_MS,
  type LogControl,
  LogControlSchema,
  type MqttClient,
} from '../../shared/index.js';

/**
 * The relay's timing on a clock the test moves (how long it waits for a node, how often it renews leases): what
 * it publishes is recorded by a stand-in for its MQTT client, which is all it uses of one.
 */
describe('the log relay, on a clock the test moves', () => {
  let sent: { topic: string; message: LogControl }[];
  let relay: LogRelay;
  const request: LogRequest = {
    nodeId: 'n1',
    nodeName: 'edge-a',
    jobId: 'job-1',
    instance: 0,
    generation: 3,
    follow: true,
    streams: 'all',
  };
  const sink = () => {
    const written: string[] = [];
    const ends: (string | undefined)[] = [];
    return {
      written,
      ends,
      sink: {
        write: (text: string) => written.push(text) > 0,
        end: (broken?: string) => void ends.push(broken),
      },
    };
  };

  beforeEach(() => {
    vi.useFakeTimers();
    sent = [];
    relay = new LogRelay(pino({ level: 'silent' }));
    const mqtt = {
      publish: (topic: string, payload: string) => {
        sent.push({ topic, message: LogControlSchema.parse(JSON.parse(payload)) });
      },
    };
    relay.attach(mqtt as unknown as MqttClient);
  });
  afterEach(() => {
    relay.stop();
    vi.useRealTimers();
  });

  it('answers 504 when the node does not open the output within 10 s, and cancels it there', async () => {
    const stream = relay.open(request);
    expect(sent).toEqual([
      {
        topic: 'nodes/n1/logs/control',
        message: {
          type: 'open',
          requestId: stream.requestId,
          job: 'job-1',
          instance: 0,
          generation: 3,
          follow: true,
          streams: 'all',
          upTo: LOG_CREDIT_BYTES,
        },
      },
    ]);
    const answered = stream.opened.catch((error: ClientError) => error);
    vi.advanceTimersByTime(9_999);
    expect(relay.count).toBe(1);
    vi.advanceTimersByTime(1);
    expect(await answered).toMatchObject({ status: 504, code: 'node_timeout' });
    expect(sent.at(-1)?.message).toEqual({ type: 'cancel', requestId: stream.requestId });
    expect(relay.count).toBe(0);
  });

  it("renews an open stream's lease every few seconds with its credit, whether or not its reader reads", async () => {
    const stream = relay.open(request);
    relay.onMessage('n1', { type: 'opened', requestId: stream.requestId, technology: 'docker' });
    await stream.opened;
    const { sink: reader } = sink();
    stream.attach(reader);
    sent.length = 0;
    vi.advanceTimersByTime(LOG_KEEPALIVE_MS * 3);
    expect(sent.map((entry) => entry.message)).toEqual(
      Array(3).fill({ type: 'credit', requestId: stream.requestId, upTo: LOG_CREDIT_BYTES }),
    );
    // A stream that ended is renewed no more, and late messages of it are dropped quietly.
    stream.cancel();
    sent.length = 0;
    vi.advanceTimersByTime(LOG_KEEPALIVE_MS * 2);
    expect(sent).toEqual([]);
    relay.onMessage('n1', {
      type: 'chunk',
      requestId: stream.requestId,
      offset: 0,
      stream: 'stdout',
      data: 'x',
    });
  });

  it('passes on what came before its reader was attached, and the end with it', async () => {
    const stream = relay.open(request);
    relay.onMessage('n1', { type: 'opened', requestId: stream.requestId, technology: 'native' });
    relay.onMessage('n1', {
      type: 'chunk',
      requestId: stream.requestId,
      offset: 0,
      stream: 'stdout',
      data: 'a\n',
    });
    relay.onMessage('n1', { type: 'end', requestId: stream.requestId, offset: 2, reason: 'eof' });
    await stream.opened;
    const reader = sink();
    stream.attach(reader.sink);
    expect(reader.written).toEqual(['a\n']);
    expect(reader.ends).toEqual([undefined]);
  });

  it("ends a node's streams when it goes offline: 409 before they opened, a break after", async () => {
    const opening = relay.open(request);
    const open = relay.open(request);
    const other = relay.open({ ...request, nodeId: 'n2' });
    relay.onMessage('n1', { type: 'opened', requestId: open.requestId, technology: 'docker' });
    const reader = sink();
    open.attach(reader.sink);
    const refused = opening.opened.catch((error: ClientError) => error);
    relay.nodeOffline('n1');
    expect(await refused).toMatchObject({ status: 409, code: 'node_offline' });
    expect(reader.ends).toEqual(['node edge-a went offline']);
    expect(relay.count).toBe(1);
    expect(other.state).toBe('opening');
  });

  it('refuses more streams than it relays at once with 503', () => {
    for (let index = 0; index < 256; index++) relay.open(request);
    expect(() => relay.open(request)).toThrow(
      expect.objectContaining({ status: 503, code: 'too_many_streams' }),
    );
  });
});
