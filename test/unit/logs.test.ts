import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseLogQuery } from '../../cluster-manager/api/routes/logs.js';
import { CreditWindow } from '../../cluster-manager/logs/credit-window.js';
import { DockerFrameDecoder, demuxDockerLogs } from '../../node-engine/runtimes/docker-logs.js';
import { tailStart } from '../../node-engine/runtimes/tail-start.js';
import {
  LOG_CHUNK_BYTES,
  LogControlSchema,
  LogStreamMessageSchema,
  parseLogSince,
  sinceTime,
} from '../../shared/index.js';

describe('since, as an operator writes it', () => {
  it('reads durations back from now, RFC 3339 times and epoch milliseconds', () => {
    expect(parseLogSince('90s')).toEqual({ since: { agoMs: 90_000 } });
    expect(parseLogSince('10m')).toEqual({ since: { agoMs: 600_000 } });
    expect(parseLogSince(' 2h ')).toEqual({ since: { agoMs: 7_200_000 } });
    expect(parseLogSince('7d')).toEqual({ since: { agoMs: 604_800_000 } });
    expect(parseLogSince('0s')).toEqual({ since: { agoMs: 0 } });
    const at = Date.UTC(2024, 4, 1, 10, 0, 0);
    expect(parseLogSince('2024-05-01T10:00:00Z')).toEqual({ since: { at } });
    expect(parseLogSince('2024-05-01T12:00:00+02:00')).toEqual({ since: { at } });
    expect(parseLogSince('2024-05-01t10:00:00.250z')).toEqual({ since: { at: at + 250 } });
    expect(parseLogSince('2024-05-01 10:00:00Z')).toEqual({ since: { at } });
    expect(parseLogSince(String(at))).toEqual({ since: { at } });
  });

  it('refuses anything else, saying what it takes', () => {
    for (const bad of [
      '',
      'yesterday',
      'm',
      '10x',
      '-5m',
      '1.5h',
      '10 m',
      '2024-05-01',
      '2024-13-01T00:00:00Z',
    ])
      expect(parseLogSince(bad), bad).toEqual({ problem: expect.stringContaining('RFC 3339') });
  });

  it("puts a duration back from the node's now, and an absolute time where it is", () => {
    expect(sinceTime({ agoMs: 60_000 }, 1_000_000)).toBe(940_000);
    expect(sinceTime({ agoMs: 60_000 }, 1000)).toBe(0);
    expect(sinceTime({ at: 5 }, 1_000_000)).toBe(5);
  });
});

describe('log message schemas', () => {
  const requestId = randomUUID();

  it('takes what the cluster manager sends a node, with defaults', () => {
    expect(
      LogControlSchema.parse({ type: 'open', requestId, job: 'j', instance: 0, follow: true, upTo: 10 }),
    ).toEqual({ type: 'open', requestId, job: 'j', instance: 0, follow: true, streams: 'all', upTo: 10 });
    expect(LogControlSchema.parse({ type: 'credit', requestId, upTo: 5 })).toEqual({
      type: 'credit',
      requestId,
      upTo: 5,
    });
  });

  it('refuses malformed control messages', () => {
    const open = { type: 'open', requestId, job: 'j', instance: 0, follow: false, upTo: 10 };
    for (const bad of [
      {},
      { ...open, type: 'close' },
      { ...open, requestId: 'nope' },
      { ...open, instance: -1 },
      { ...open, upTo: -1 },
      { ...open, tail: -1 },
      { ...open, tail: 10_000_001 },
      { ...open, since: { agoMs: -1 } },
      { ...open, since: { agoMs: 1, at: 1 } },
      { ...open, streams: 'stdin' },
      { ...open, follow: 'yes' },
      { ...open, extra: 1 },
      { type: 'cancel', requestId, upTo: 1 },
    ])
      expect(LogControlSchema.safeParse(bad).success, JSON.stringify(bad)).toBe(false);
  });

  it('takes what a node sends back, and refuses chunks too large, empty or of no stream', () => {
    const chunk = { type: 'chunk', requestId, offset: 0, stream: 'stdout', data: 'x' };
    expect(LogStreamMessageSchema.safeParse(chunk).success).toBe(true);
    expect(
      LogStreamMessageSchema.safeParse({ type: 'end', requestId, offset: 3, reason: 'eof' }).success,
    ).toBe(true);
    for (const bad of [
      { ...chunk, data: '' },
      { ...chunk, data: 'x'.repeat(LOG_CHUNK_BYTES + 9) },
      { ...chunk, stream: 'stdin' },
      { ...chunk, offset: 1.5 },
      { type: 'end', requestId, offset: 0, reason: 'bored' },
      { type: 'opened', requestId, technology: 'vm' },
    ])
      expect(LogStreamMessageSchema.safeParse(bad).success, JSON.stringify(bad)).toBe(false);
  });
});

describe('credit, as the cluster manager accounts it', () => {
  it('grants a window ahead of what arrived, half a window at a time, while the reader takes it', () => {
    const credit = new CreditWindow(100);
    expect(credit.upTo).toBe(100);
    expect(credit.arrive(0, 30)).toEqual({ take: true, lost: 0 });
    expect(credit.written(true)).toBeUndefined();
    expect(credit.arrive(30, 30)).toEqual({ take: true, lost: 0 });
    expect(credit.written(true)).toBe(160);
    expect(credit.upTo).toBe(160);
    expect(credit.received).toBe(60);
  });

  it('grants nothing while the reader is full, and a window ahead once it drained', () => {
    const credit = new CreditWindow(100);
    credit.arrive(0, 60);
    expect(credit.written(false)).toBeUndefined();
    expect(credit.waitingForReader).toBe(true);
    credit.arrive(60, 39);
    expect(credit.written(false)).toBeUndefined();
    expect(credit.upTo).toBe(100);
    expect(credit.drained()).toBe(199);
    expect(credit.waitingForReader).toBe(false);
    // Drained again with nothing new: nothing more to grant.
    expect(credit.drained()).toBeUndefined();
  });

  it('drops repeats, late chunks and chunks beyond the credit, and counts bytes lost on the way', () => {
    const credit = new CreditWindow(100);
    expect(credit.arrive(0, 10)).toEqual({ take: true, lost: 0 });
    expect(credit.arrive(0, 10)).toEqual({ take: false });
    expect(credit.arrive(30, 10)).toEqual({ take: true, lost: 20 });
    expect(credit.arrive(10, 10)).toEqual({ take: false });
    expect(credit.arrive(100, 1)).toEqual({ take: false });
    // One chunk may cross the line: it started within the credit.
    expect(credit.arrive(99, 20)).toEqual({ take: true, lost: 59 });
    expect(credit.received).toBe(119);
  });
});

/** Docker's multiplexed format: an 8-byte header per frame (stream, 0, 0, 0, big-endian length). */
function frame(stream: 1 | 2, text: string): Buffer {
  const payload = Buffer.from(text);
  const header = Buffer.alloc(8);
  header[0] = stream;
  header.writeUInt32BE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

describe("Docker's multiplexed output", () => {
  const whole = Buffer.concat([
    frame(1, 'out one\n'),
    frame(2, 'err ✓\n'),
    frame(1, ''),
    frame(1, 'out two\n'),
  ]);

  it('splits into stdout and stderr however the bytes arrive, holding no more than a partial header', () => {
    for (let cut = 0; cut <= whole.length; cut++) {
      for (let second = cut; second <= whole.length; second += 7) {
        const decoder = new DockerFrameDecoder();
        const pieces = [whole.subarray(0, cut), whole.subarray(cut, second), whole.subarray(second)].flatMap(
          (part) => decoder.push(part),
        );
        const text = (stream: string) =>
          Buffer.concat(
            pieces.filter((piece) => piece.stream === stream).map((piece) => piece.data),
          ).toString();
        expect(text('stdout'), `cut at ${cut} and ${second}`).toBe('out one\nout two\n');
        expect(text('stderr')).toBe('err ✓\n');
      }
    }
  });

  it('passes a stream without frames (a container with a TTY) on as stdout', () => {
    const decoder = new DockerFrameDecoder();
    expect(decoder.push(Buffer.from('plain text\n'))).toEqual([
      { stream: 'stdout', data: Buffer.from('plain text\n') },
    ]);
    expect(decoder.push(Buffer.from('more'))).toEqual([{ stream: 'stdout', data: Buffer.from('more') }]);
    expect(demuxDockerLogs(whole)).toBe('out one\nerr ✓\nout two\n');
  });
});

/** Segments held in memory, read by position as files are. */
const segments = (...texts: string[]) =>
  texts.map((text) => {
    const bytes = Buffer.from(text);
    return {
      size: bytes.length,
      read: async (position: number, length: number) => bytes.subarray(position, position + length),
    };
  });

describe('where the last lines start', () => {
  it('counts a final newline as the end of the last line, as tail -n does', async () => {
    expect(await tailStart(segments('a\nb\nc\n'), 2)).toEqual({ index: 0, offset: 2 });
    expect(await tailStart(segments('a\nb\nc'), 2)).toEqual({ index: 0, offset: 2 });
    expect(await tailStart(segments('a\nb\nc\n'), 1)).toEqual({ index: 0, offset: 4 });
    expect(await tailStart(segments('a\nb\nc\n'), 3)).toEqual({ index: 0, offset: 0 });
    expect(await tailStart(segments('a\nb\nc\n'), 10)).toEqual({ index: 0, offset: 0 });
    expect(await tailStart(segments('a\n\n\n'), 2)).toEqual({ index: 0, offset: 2 });
  });

  it('reaches back into older files, and past empty ones', async () => {
    expect(await tailStart(segments('old1\nold2\n', '', 'new\n'), 2)).toEqual({ index: 0, offset: 5 });
    expect(await tailStart(segments('old1\nold2\n', 'new\n'), 1)).toEqual({ index: 0, offset: 10 });
    // A line split between a copy and the file (written across a rotation) counts once.
    expect(await tailStart(segments('a\nhal', 'f\nb\n'), 2)).toEqual({ index: 0, offset: 2 });
  });

  it('starts at the very end for no lines, and at the start of nothing', async () => {
    expect(await tailStart(segments('a\n', 'b\n'), 0)).toEqual({ index: 1, offset: 2 });
    expect(await tailStart([], 5)).toEqual({ index: 0, offset: 0 });
  });

  it('finds lines far back in large files, block by block', async () => {
    const big = `${'x'.repeat(200_000)}\n${'y\n'.repeat(3)}`;
    expect(await tailStart(segments(big), 4)).toEqual({ index: 0, offset: 0 });
    expect(await tailStart(segments(big), 3)).toEqual({ index: 0, offset: 200_001 });
  });
});

describe('the query of a log request', () => {
  it('reads follow, tail, since and stream, with defaults', () => {
    expect(parseLogQuery({})).toEqual({ follow: false, streams: 'all' });
    expect(parseLogQuery({ follow: 'true', tail: '100', since: '10m', stream: 'stderr' })).toEqual({
      follow: true,
      tail: 100,
      since: { agoMs: 600_000 },
      streams: 'stderr',
    });
    expect(parseLogQuery({ follow: '0', tail: 'all' })).toEqual({ follow: false, streams: 'all' });
    expect(parseLogQuery({ follow: '1', tail: '0' })).toEqual({ follow: true, tail: 0, streams: 'all' });
  });

  it('names every bad parameter', () => {
    expect(
      parseLogQuery({
        follow: 'yes',
        tail: '-1',
        since: 'later',
        stream: 'stdin',
        page: '2',
        pretty: 'true',
      }),
    ).toEqual({
      problems: [
        { path: 'page', message: expect.stringContaining('unknown parameter') },
        { path: 'pretty', message: expect.stringContaining('unknown parameter') },
        { path: 'follow', message: 'true or false' },
        { path: 'tail', message: expect.stringContaining('a number of lines') },
        { path: 'since', message: expect.stringContaining('RFC 3339') },
        { path: 'stream', message: 'one of all, stdout, stderr' },
      ],
    });
    expect(parseLogQuery({ tail: ['1', '2'] })).toEqual({
      problems: [{ path: 'tail', message: 'give it once, as one value' }],
    });
    expect(parseLogQuery({ tail: '1000001' })).toMatchObject({ problems: [{ path: 'tail' }] });
  });
});
