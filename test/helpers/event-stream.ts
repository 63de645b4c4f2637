import { readStreamMessage, SseParser, type StreamMessage } from '../../shared/index.js';
import type { RunningClusterManager } from './cluster-manager.js';

/** A client of `GET /api/stream` that keeps every message it reads. */
export interface StreamReader {
  response: Response;
  messages: StreamMessage[];
  /** The ids of the `event` messages, in the order they came. */
  eventIds(): number[];
  /** Resolves when the server ended the stream (or it was closed here). */
  ended: Promise<void>;
  close(): void;
}

/** Opens `GET /api/stream` (`query` with its `?`) with the admin token unless `headers` says otherwise. */
export async function openStream(
  cm: RunningClusterManager,
  query = '',
  headers: Record<string, string> = {},
): Promise<StreamReader> {
  const controller = new AbortController();
  const response = await cm.fetch(`${cm.url}/api/stream${query}`, {
    headers: { authorization: `Bearer ${cm.apiToken}`, ...headers },
    signal: controller.signal,
  });
  const messages: StreamMessage[] = [];
  const ended = (async () => {
    if (!response.ok || !response.body) return;
    const parser = new SseParser();
    const decoder = new TextDecoder();
    const reader = response.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        for (const message of parser.push(decoder.decode(value, { stream: true }))) {
          const known = readStreamMessage(message);
          if (known) messages.push(known);
        }
      }
    } catch {
      // Aborted here, or cut off by the server: what was read is in `messages`.
    }
  })();
  return {
    response,
    messages,
    eventIds: () => messages.flatMap((message) => (message.kind === 'event' ? [message.id] : [])),
    ended,
    close: () => controller.abort(),
  };
}
