import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  LOG_CHUNK_BYTES,
  LOG_CREDIT_BYTES,
  type LogControl,
  LogControlSchema,
  type LogStreamMessage,
  topics,
} from '../../shared/index.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { runEdgectlHere } from '../helpers/edgectl.js';
import { TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait.js';

type OpenRequest = Extract<LogControl, { type: 'open' }>;

/**
 * The cluster manager's relay of log streams, against nodes this test drives by hand over the real embedded broker:
 * what it asks, what it answers the HTTP reader for each thing a node may do or fail to do, how it grants credit,
 * and that nothing a node sends on `logs/stream` (malformed, foreign, beyond its credit) harms a stream.
 */
describe('log streams through the cluster manager (nodes driven by the test)', () => {
  let cm: RunningClusterManager;
  let node: TestNode;
  let jobId: string;
  /** What the node got on its `logs/control`. */
  const control: LogControl[] = [];

  const say = (message: LogStreamMessage | string, from = node) =>
    from.publish(
      topics.logsStream(from.ack!.nodeId),
      typeof message === 'string' ? message : JSON.stringify(message),
    );
  const opens = () => control.filter((message): message is OpenRequest => message.type === 'open');
  const ofRequest = (requestId: string) => control.filter((message) => message.requestId === requestId);
  const rejected = async () =>
    Number(
      /^edge_cm_rejected_messages_total\{topic_kind="logs\/stream"\} (\S+)$/m.exec(
        await (await cm.api('/metrics')).text(),
      )?.[1] ?? 0,
    );

  /** A log request over HTTP, and the open message it made the node get. */
  async function request(query = 'follow=true'): Promise<{ response: Promise<Response>; open: OpenRequest }> {
    const before = opens().length;
    const response = cm.api(`/api/jobs/${jobId}/instances/0/logs?${query}`);
    const open = await waitFor(() => opens()[before], 'the open request at the node');
    return { response, open };
  }

  /** Reads the body until `until` holds for what came; then what came. */
  async function readUntil(body: ReadableStreamDefaultReader<Uint8Array>, until: (text: string) => boolean) {
    const decoder = new TextDecoder();
    let text = '';
    while (!until(text)) {
      const { done, value } = await body.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    return text;
  }

  async function joinNode(name: string): Promise<TestNode> {
    const joined = await TestNode.join(cm, name);
    joined.mqtt!.on('message', (topic, payload) => {
      if (topic === topics.logsControl(joined.ack!.nodeId))
        control.push(LogControlSchema.parse(JSON.parse(payload.toString())));
    });
    await joined.mqtt!.subscribeAsync(topics.logsControl(joined.ack!.nodeId), { qos: 0 });
    return joined;
  }

  beforeAll(async () => {
    cm = await startClusterManager();
    node = await joinNode('logs-a');
    const created = await cm.api('/api/jobs', {
      method: 'POST',
      json: { name: 'web', image: 'edge/busybox:latest', constraints: { nodes: ['logs-a'] } },
    });
    jobId = ((await created.json()) as { id: string }).id;
  });

  afterAll(async () => {
    await node?.close();
    await cm?.stop();
  });

  it('asks the node for the instance placed there, streams what it sends, and ends with it', async () => {
    const { response, open } = await request('follow=true&tail=10&since=10m&stream=stderr');
    expect(open).toEqual({
      type: 'open',
      requestId: expect.any(String),
      job: jobId,
      instance: 0,
      generation: expect.any(Number),
      follow: true,
      tail: 10,
      since: { agoMs: 600_000 },
      streams: 'stderr',
      upTo: LOG_CREDIT_BYTES,
    });
    await say({ type: 'opened', requestId: open.requestId, technology: 'docker' });
    const res = await response;
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = res.body!.getReader();
    await say({ type: 'chunk', requestId: open.requestId, offset: 0, stream: 'stderr', data: 'héllo\n' });
    expect(await readUntil(body, (text) => text.includes('\n'))).toBe('héllo\n');
    await say({ type: 'chunk', requestId: open.requestId, offset: 7, stream: 'stderr', data: 'bye\n' });
    await say({ type: 'end', requestId: open.requestId, offset: 11, reason: 'eof' });
    expect(await readUntil(body, () => false)).toBe('bye\n');
  });

  it('grants credit as its reader takes the output, a window ahead of what arrived', async () => {
    const { response, open } = await request();
    await say({ type: 'opened', requestId: open.requestId, technology: 'native' });
    const body = (await response).body!.getReader();
    const line = `${'x'.repeat(LOG_CHUNK_BYTES - 1)}\n`;
    let offset = 0;
    // Sends what the credit allows, as a node does, until more than a window went through.
    while (offset < 2 * LOG_CREDIT_BYTES) {
      const granted = Math.max(
        open.upTo,
        ...ofRequest(open.requestId).map((message) => (message.type === 'credit' ? message.upTo : 0)),
      );
      if (offset >= granted) {
        // Out of credit: more comes only as the reader reads.
        await body.read();
        await new Promise((resolve) => setTimeout(resolve, 20));
        continue;
      }
      await say({ type: 'chunk', requestId: open.requestId, offset, stream: 'stdout', data: line });
      offset += line.length;
    }
    const credits = ofRequest(open.requestId).flatMap((message) =>
      message.type === 'credit' ? [message] : [],
    );
    expect(credits.length).toBeGreaterThan(0);
    for (const credit of credits) expect(credit.upTo).toBeLessThanOrEqual(offset + LOG_CREDIT_BYTES);
    await body.cancel();
    await waitFor(() => ofRequest(open.requestId).some((message) => message.type === 'cancel'), 'the cancel');
  });

  it('drops what a node must not send on a stream, says what was lost, and keeps the stream going', async () => {
    const other = await joinNode('logs-b');
    const { response, open } = await request();
    await say({ type: 'opened', requestId: open.requestId, technology: 'docker' });
    const body = (await response).body!.getReader();
    const rejectedBefore = await rejected();
    for (const junk of [
      'not json',
      '{}',
      JSON.stringify({ type: 'chunk', requestId: open.requestId, offset: -1, stream: 'stdout', data: 'x' }),
      JSON.stringify({ type: 'chunk', requestId: open.requestId, offset: 0, stream: 'stdin', data: 'x' }),
      JSON.stringify({ type: 'chunk', requestId: open.requestId, offset: 0, stream: 'stdout', data: '' }),
      JSON.stringify({ type: 'end', requestId: open.requestId, offset: 0, reason: 'bored' }),
    ])
      await say(junk);
    // Well formed but not to be taken: another node's word on this stream, a chunk beyond the credit granted.
    await say(
      { type: 'chunk', requestId: open.requestId, offset: 0, stream: 'stdout', data: 'forged\n' },
      other,
    );
    await say({ type: 'end', requestId: open.requestId, offset: 0, reason: 'eof' }, other);
    await say({
      type: 'chunk',
      requestId: open.requestId,
      offset: LOG_CREDIT_BYTES,
      stream: 'stdout',
      data: 'greedy\n',
    });
    // Then the real output, 10 bytes of it lost on the way.
    await say({ type: 'chunk', requestId: open.requestId, offset: 0, stream: 'stdout', data: 'one\n' });
    await say({ type: 'chunk', requestId: open.requestId, offset: 14, stream: 'stdout', data: 'two\n' });
    const text = await readUntil(body, (read) => read.includes('two\n'));
    expect(text).toBe('one\n\n[edge: 10 bytes of output lost on the way]\ntwo\n');
    expect(await rejected()).toBe(rejectedBefore + 6);
    await body.cancel();
    await other.close();
  });

  it('answers 409, 503 or 502 for a request its node refuses', async () => {
    for (const [code, status, answer] of [
      ['not_found', 409, 'no_workload'],
      ['too_many_streams', 503, 'too_many_streams'],
      ['runtime_error', 502, 'node_error'],
    ] as const) {
      const { response, open } = await request();
      await say({
        type: 'end',
        requestId: open.requestId,
        offset: 0,
        reason: 'error',
        error: { code, message: `refused: ${code}` },
      });
      const res = await response;
      expect(res.status).toBe(status);
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(body.error).toEqual({ code: answer, message: expect.stringContaining(`refused: ${code}`) });
    }
  });

  it('tells edgectl -f why the stream broke off when its node goes offline (exit 1), then answers 409', async () => {
    const env = {
      EDGE_SERVER: cm.url,
      EDGE_API_TOKEN: cm.apiToken,
      EDGE_CA_FILE: `${cm.dataDir}/tls/ca.pem`,
    };
    let printed = '';
    const before = opens().length;
    const following = runEdgectlHere(['logs', `${jobId}#0`, '-f'], {
      env,
      onStdout: (text) => {
        printed += text;
      },
    });
    const open = await waitFor(() => opens()[before], 'the open request at the node');
    await say({ type: 'opened', requestId: open.requestId, technology: 'docker' });
    await say({
      type: 'chunk',
      requestId: open.requestId,
      offset: 0,
      stream: 'stdout',
      data: 'last words\n',
    });
    await waitFor(() => printed.includes('last words'), 'the output printed');
    // The node drops off the broker without a word: its last will takes it offline.
    (node.mqtt as unknown as { stream: { destroy(): void } }).stream.destroy();
    const result = await following;
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('last words\n\n[edge: the log stream broke off: node logs-a went offline]\n');
    expect(result.stderr).toBe('edgectl: the log stream broke off before its end\n');
    const res = await cm.api(`/api/jobs/${jobId}/instances/0/logs`);
    expect(res.status).toBe(409);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('node_offline');
  });

  it('lets read-only tokens read logs, and join tokens not', async () => {
    const made = await cm.api('/api/tokens', { method: 'POST', json: { name: 'viewer', role: 'read-only' } });
    const { token } = (await made.json()) as { token: string };
    const asViewer = await cm.api(`/api/jobs/${jobId}/instances/0/logs`, {
      headers: { authorization: `Bearer ${token}` },
    });
    // Allowed: past the token check, to what the instance's state answers (its node is offline now).
    expect(asViewer.status).toBe(409);
    const asJoin = await cm.api(`/api/jobs/${jobId}/instances/0/logs`, {
      headers: { authorization: `Bearer ${cm.joinToken}` },
    });
    expect(asJoin.status).toBe(403);
  });
});
