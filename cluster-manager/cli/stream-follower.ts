import { backoffDelay, readStreamMessage, SseParser, type StreamMessage, sleep } from '../../shared/index.js';
import { type ApiClient, ApiError, ServerUnreachableError } from './api-client.js';

/** Reconnects start after about a second and back off to half a minute. */
const RECONNECT_BASE_MS = 1000;
const RECONNECT_MAX_MS = 30_000;
/** The server sends a heartbeat every 15 s: a connection silent for this long is dead, though no error came. */
const SILENCE_MS = 45_000;
/** How long to wait for the stream's headers. */
const CONNECT_TIMEOUT_MS = 15_000;

export interface StreamFollowing {
  /** `kinds`, `job`, `node`, `type` of `GET /api/stream`. */
  query: Record<string, string | undefined>;
  /** Start after this event (the newest one already shown); undefined: from now. */
  after?: number;
  signal?: AbortSignal;
  /** At every (re)connect, once the stream is open: what may have changed while it was not. */
  onOpen: () => Promise<void>;
  /** The messages that came together (a server's notice window arrives as one batch). */
  onMessages: (messages: StreamMessage[]) => Promise<void>;
  /** The stream dropped or could not open; it is tried again after `delayMs`. */
  onRetry: (reason: string, delayMs: number) => void;
}

/**
 * Follows `GET /api/stream` until `signal` aborts: reconnects with back-off when the stream drops or cannot be
 * opened (unreachable, 5xx, 503 too many streams), each time with `Last-Event-ID` set to the last event seen,
 * so no event is lost or shown twice. A 4xx other than those (a revoked token, an unknown job) ends it.
 */
export async function followStream(api: ApiClient, following: StreamFollowing): Promise<void> {
  const { signal } = following;
  let lastEventId = following.after;
  let attempt = 0;
  while (!signal?.aborted) {
    const connection = new AbortController();
    const abort = () => connection.abort();
    signal?.addEventListener('abort', abort, { once: true });
    let silence = setTimeout(abort, CONNECT_TIMEOUT_MS);
    let reason: string;
    try {
      const body = await api.openStream(following.query, lastEventId, connection.signal);
      await following.onOpen();
      attempt = 0;
      const parser = new SseParser();
      const decoder = new TextDecoder();
      const reader = body.getReader();
      for (;;) {
        clearTimeout(silence);
        silence = setTimeout(abort, SILENCE_MS);
        const { done, value } = await reader.read();
        if (done) break;
        const messages = parser.push(decoder.decode(value, { stream: true })).flatMap((message) => {
          const known = readStreamMessage(message);
          return known ? [known] : [];
        });
        for (const message of messages) if (message.kind === 'event') lastEventId = message.id;
        if (messages.length > 0) await following.onMessages(messages);
      }
      reason = 'the stream ended';
    } catch (error) {
      if (signal?.aborted) return;
      if (error instanceof ApiError && error.status < 500) throw error;
      if (error instanceof ApiError) reason = `${error.body.message} (HTTP ${error.status})`;
      else if (error instanceof ServerUnreachableError) reason = error.reason;
      else if (connection.signal.aborted) reason = 'no heartbeat from the cluster manager';
      else reason = (error as Error).message;
    } finally {
      clearTimeout(silence);
      signal?.removeEventListener('abort', abort);
      connection.abort();
    }
    if (signal?.aborted) return;
    const delay = backoffDelay(attempt++, RECONNECT_BASE_MS, RECONNECT_MAX_MS);
    following.onRetry(reason, delay);
    await sleep(delay, signal);
  }
}
