import { afterEach, describe, expect, it, vi } from 'vitest';
import { NoticeWindow } from '../../cluster-manager/push/notice-window.js';
import { readStreamMessage, SseParser } from '../../shared/index.js';

describe('the text/event-stream parser', () => {
  it('reads messages split anywhere, with any line ending, skipping comments', () => {
    const text =
      ': keep-alive\r\n\r\nretry: 1000\n\nid: 7\nevent: event\ndata: {"id":7,"ts":1,"type":"job.created",' +
      '"message":"job a created"}\r\n\r\nevent: job\rdata: {"id":"j1"}\r\rdata: line one\ndata: line two\n\n';
    // Every split point, one character at a time included: a CRLF cut in two is one line end.
    for (const size of [1, 2, 3, 7, text.length]) {
      const parser = new SseParser();
      const messages = [];
      for (let at = 0; at < text.length; at += size) messages.push(...parser.push(text.slice(at, at + size)));
      expect(messages, `chunks of ${size}`).toEqual([
        {
          event: 'event',
          id: '7',
          data: '{"id":7,"ts":1,"type":"job.created","message":"job a created"}',
        },
        { event: 'job', data: '{"id":"j1"}' },
        { event: 'message', data: 'line one\nline two' },
      ]);
    }
  });

  it('checks the messages of GET /api/stream and passes over kinds it does not know', () => {
    expect(readStreamMessage({ event: 'node', data: '{"id":"n1"}' })).toEqual({
      kind: 'node',
      data: { id: 'n1' },
    });
    expect(
      readStreamMessage({
        event: 'event',
        id: '3',
        data: '{"id":3,"ts":1,"type":"node.online","message":"node a online","nodeId":"n1"}',
      }),
    ).toMatchObject({ kind: 'event', id: 3, data: { nodeId: 'n1' } });
    expect(readStreamMessage({ event: 'something-newer', data: '{}' })).toBeUndefined();
    expect(() => readStreamMessage({ event: 'job', data: '{"name":"no id"}' })).toThrow();
  });
});

describe('notice windows', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('hand over each id once per window, however often it changed', () => {
    vi.useFakeTimers();
    const flushed: string[][] = [];
    const window = new NoticeWindow(1000, (ids) => flushed.push([...ids]));
    for (let i = 0; i < 50; i++) window.add(i % 2 === 0 ? 'node-a' : 'node-b');
    expect(flushed).toEqual([]);
    vi.advanceTimersByTime(999);
    expect(flushed).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(flushed).toEqual([['node-a', 'node-b']]);
    window.add('node-a');
    vi.advanceTimersByTime(1000);
    expect(flushed).toEqual([['node-a', 'node-b'], ['node-a']]);
    window.add('node-c');
    window.stop();
    vi.advanceTimersByTime(5000);
    expect(flushed).toHaveLength(2);
  });
});
