import { request } from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CATCH_UP_PAGE } from '../../cluster-manager/push/event-stream.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { openStream, type StreamReader } from '../helpers/event-stream.js';
import { TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait.js';

/** `GET /api/stream`: the server push of events and change notices (issue 14, item 4). */
describe('the event stream', () => {
  let cm: RunningClusterManager;
  let node: TestNode;
  const open: StreamReader[] = [];
  const follow = async (query = '', headers: Record<string, string> = {}) => {
    const stream = await openStream(cm, query, headers);
    open.push(stream);
    return stream;
  };
  /** The ids of the events after `afterId` that the log holds, oldest first. */
  const eventsAfter = (afterId: number, type?: string) =>
    cm.manager.store.events
      .following(100_000, { afterId, ...(type ? { type } : {}) })
      .map((event) => event.id);

  beforeAll(async () => {
    cm = await startClusterManager();
    node = await TestNode.join(cm, 'st-node');
  });

  afterAll(async () => {
    for (const stream of open) stream.close();
    await node?.close();
    await cm?.stop();
  });

  it('needs a token, refuses bad parameters with 400 naming them, and unknown jobs or nodes with 404', async () => {
    const anonymous = await cm.fetch(`${cm.url}/api/stream`);
    expect(anonymous.status).toBe(401);
    expect(((await anonymous.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
    const join = await cm.fetch(`${cm.url}/api/stream`, {
      headers: { authorization: `Bearer ${cm.joinToken}` },
    });
    expect(join.status).toBe(403);
    for (const [query, headers, path] of [
      ['?kinds=event,bogus', {}, 'kinds'],
      ['?after=-1', {}, 'after'],
      ['?after=1.5', {}, 'after'],
      ['?type=', {}, 'type'],
      ['?kinds=event&kinds=job', {}, 'kinds'],
      ['', { 'last-event-id': 'yesterday' }, 'last-event-id'],
    ] as const) {
      const bad = await cm.api(`/api/stream${query}`, { headers });
      expect(bad.status, query || JSON.stringify(headers)).toBe(400);
      const body = (await bad.json()) as { error: { code: string; details: { path: string }[] } };
      expect(body.error.code).toBe('invalid_input');
      expect(body.error.details.map((detail) => detail.path)).toEqual([path]);
    }
    expect((await cm.api('/api/stream?job=nope')).status).toBe(404);
    expect((await cm.api('/api/stream?node=nope')).status).toBe(404);
    expect(cm.manager.streams.stats().open).toBe(0);
  });

  it('pushes the events that pass the filters, and notices of the jobs and nodes that changed', async () => {
    await cm.api('/api/jobs', { method: 'POST', json: { name: 'st-web', image: 'edge/busybox:latest' } });
    await cm.api('/api/jobs', { method: 'POST', json: { name: 'st-db', image: 'edge/busybox:latest' } });
    const web = (await (await cm.api('/api/jobs/st-web')).json()) as { id: string };
    const readOnly = await cm.api('/api/tokens', {
      method: 'POST',
      json: { name: 'st-reader', role: 'read-only' },
    });
    const { token } = (await readOnly.json()) as { token: string };

    const webEvents = await follow('?job=st-web&kinds=event', { authorization: `Bearer ${token}` });
    expect(webEvents.response.status).toBe(200);
    expect(webEvents.response.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    const scaled = await follow('?type=job.scaled');
    const notices = await follow('?kinds=job,node');
    const nodeNotices = await follow(`?kinds=node&node=st-node`);
    expect(cm.manager.streams.stats().open).toBe(4);

    await cm.api('/api/jobs/st-db/replicate', { method: 'POST', json: { replicas: 2 } });
    await cm.api('/api/jobs/st-web/replicate', { method: 'POST', json: { replicas: 2 } });
    await waitFor(
      () => webEvents.messages.some((m) => m.kind === 'event' && m.data.type === 'job.scaled'),
      'the scaling of st-web',
    );
    await waitFor(() => scaled.messages.length === 2, 'both scalings');
    // Only what was asked for: st-web's events (no notices), and events of one type.
    expect(webEvents.messages.every((m) => m.kind === 'event' && m.data.jobId === web.id)).toBe(true);
    expect(scaled.messages.map((m) => m.kind === 'event' && m.data.message)).toEqual([
      'job st-db scaled from 1 to 2',
      'job st-web scaled from 1 to 2',
    ]);
    await waitFor(
      () => notices.messages.some((m) => m.kind === 'job' && m.data.id === web.id),
      'a notice that st-web changed',
    );
    expect(notices.messages.every((m) => m.kind === 'job' || m.kind === 'node')).toBe(true);

    // A node notice when the node changes: cordoned by an operator, or heard with new telemetry.
    await cm.api('/api/nodes/st-node/cordon', { method: 'POST' });
    await waitFor(
      () => nodeNotices.messages.some((m) => m.kind === 'node' && m.data.id === node.ack!.nodeId),
      'a notice that st-node changed',
    );
    expect(nodeNotices.messages.every((m) => m.kind === 'node' && m.data.id === node.ack!.nodeId)).toBe(true);
    const before = nodeNotices.messages.length;
    await node.sendTelemetry([], { cpu: { percent: 77, cores: 4, load1: 1 } });
    await waitFor(() => nodeNotices.messages.length > before, 'a notice after new telemetry');
  });

  it('ends the streams of a token when it is revoked', async () => {
    const created = await cm.api('/api/tokens', {
      method: 'POST',
      json: { name: 'st-revoked', role: 'read-only' },
    });
    const { token } = (await created.json()) as { token: string };
    const stream = await follow('?kinds=event', { authorization: `Bearer ${token}` });
    expect(stream.response.status).toBe(200);
    const open = cm.manager.streams.stats().open;
    await cm.api('/api/tokens/st-revoked', { method: 'DELETE' });
    await stream.ended;
    expect(cm.manager.streams.stats().open).toBe(open - 1);
    expect((await openStream(cm, '', { authorization: `Bearer ${token}` })).response.status).toBe(401);
  });

  it('resumes with Last-Event-ID: every event after it, once, in order, also while events keep coming', async () => {
    const record = (count: number) =>
      cm.manager.store.transaction(() => {
        for (let i = 0; i < count; i++) cm.manager.store.events.record('test.resume', `resume ${i}`);
      });
    const start = cm.manager.store.events.newestId();
    const first = await follow(`?kinds=event&type=test.resume&after=${start}`);
    record(300);
    await waitFor(() => first.messages.length >= 100, 'some of the events');
    first.close();
    await first.ended;
    const got = first.eventIds();
    // More come while nobody follows, then again while the second stream catches up.
    record(700);
    const second = await follow(`?kinds=event&type=test.resume`, { 'last-event-id': String(got.at(-1)) });
    record(500);
    const expected = eventsAfter(start, 'test.resume');
    expect(expected).toHaveLength(1500);
    await waitFor(() => got.length + second.eventIds().length >= 1500, 'every event');
    expect([...got, ...second.eventIds()]).toEqual(expected);
  });

  it('says resync when it cannot give back what a client asks for: pruned events, or an id the log never had', async () => {
    const { events } = cm.manager.store;
    events.record('test.gap', 'before the prune');
    const beyond = await follow('?kinds=event&type=test.gap', {
      'last-event-id': String(events.newestId() + 1000),
    });
    events.prune(5);
    const pruned = await follow('?kinds=event&type=test.gap&after=1');
    events.record('test.gap', 'after the prune');
    const messages = (stream: StreamReader) =>
      stream.messages.map((m) =>
        m.kind === 'event' ? m.data.message : m.kind === 'resync' ? m.data.reason : '',
      );
    // From now, with a word: the log never had that id (a cluster manager whose data was started afresh).
    await waitFor(() => beyond.messages.length === 2, 'the resync and the new event');
    expect(messages(beyond)).toEqual([expect.stringMatching(/log started afresh/), 'after the prune']);
    // What is left, with a word for what is not.
    await waitFor(() => pruned.messages.length === 3, 'the resync and the events left');
    expect(messages(pruned)).toEqual([
      expect.stringMatching(/^events 2 to \d+ were pruned/),
      'before the prune',
      'after the prune',
    ]);
  });

  it('cuts off a client that stops reading instead of buffering for it, and it resumes without loss', async () => {
    const before = cm.manager.streams.stats();
    const after = cm.manager.store.events.newestId();
    // A client that reads the headers and then nothing: its socket fills up.
    const stalled = await new Promise<{ resume: () => void; closed: Promise<void> }>((resolve, reject) => {
      const req = request(
        `${cm.url}/api/stream?kinds=event&after=${after}`,
        { ca: cm.ca, headers: { authorization: `Bearer ${cm.apiToken}` } },
        (res) => {
          res.pause();
          const closed = new Promise<void>((done) => res.socket.once('close', () => done()));
          resolve({ resume: () => res.resume(), closed });
        },
      );
      req.on('error', reject);
      req.end();
    });
    // Far more than the socket buffers hold, in events of 8 KiB.
    const record = (count: number, text: string) =>
      cm.manager.store.transaction(() => {
        for (let i = 0; i < count; i++) cm.manager.store.events.record('test.flood', text);
      });
    record(1500, 'x'.repeat(8192));
    // Events keep coming; once its socket takes nothing more for 1000 of them, it is cut off.
    await waitFor(() => {
      if (cm.manager.streams.stats().cutOff > before.cutOff) return true;
      record(100, 'more');
      return false;
    }, 'the stalled stream cut off');
    // Reading again, the client finds what its socket held, then the end.
    stalled.resume();
    await stalled.closed;
    const stats = cm.manager.streams.stats();
    expect(stats.open).toBe(before.open);
    // What this process held for it never passed its socket's high-water mark (16 KiB) and one page of the log:
    // the megabytes it did not read stayed in the event log.
    expect(stats.peakBufferedBytes).toBeLessThan(16 * 1024 + CATCH_UP_PAGE * 8300);
    const metrics = await (await cm.api('/metrics')).text();
    expect(metrics).toMatch(/^edge_cm_streams_cut_off_total [1-9]/m);

    // It comes back from where it was (here: nothing was read) and gets every event, once.
    const resumed = await follow('?kinds=event&type=test.flood', { 'last-event-id': String(after) });
    const expected = eventsAfter(after, 'test.flood');
    await waitFor(() => resumed.eventIds().length >= expected.length, 'every event again');
    expect(resumed.eventIds()).toEqual(expected);
    resumed.close();
  });

  it('serves at most --max-streams at once (503 for more) and ends every stream when it stops', async () => {
    const small = await startClusterManager({ maxStreams: 2 });
    let stopped = false;
    try {
      const streams = [await openStream(small), await openStream(small)];
      const refused = await small.api('/api/stream');
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('5');
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('too_many_streams');
      streams[0]!.close();
      await waitFor(() => small.manager.streams.stats().open === 1, 'the closed stream forgotten');
      const again = await openStream(small);
      expect(again.response.status).toBe(200);
      streams.push(again);
      // Stopping ends the open streams rather than waiting for them.
      await small.stop();
      stopped = true;
      await Promise.all(streams.map((stream) => stream.ended));
    } finally {
      if (!stopped) await small.stop();
    }
  });
});
