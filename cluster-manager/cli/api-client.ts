import {
  type ApiErrorBody,
  ApiErrorBodySchema,
  type ClusterEvent,
  describeConnectError,
  type Job,
  type JobChange,
  type JobPlan,
  type JobVersion,
  type NodeStatus,
  type NodeView,
} from '../../shared/index.js';

/** A token as `/api/tokens` shows it: never its secret. */
export interface TokenInfo {
  name: string;
  role: string;
  state: 'valid' | 'expired' | 'revoked';
  createdAt: number;
  expiresAt: number | null;
  revokedAt: number | null;
}

export interface Health {
  status: string;
  version: string;
}

/** The API answered with an error body (`{error: {code, message, details}}`) or an unexpected status. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    readonly body: ApiErrorBody,
  ) {
    super(body.message);
  }
}

/** No HTTP answer at all: refused, unresolvable, timed out. */
export class ServerUnreachableError extends Error {
  override name = 'ServerUnreachableError';
  constructor(
    readonly server: string,
    readonly reason: string,
  ) {
    super(`cannot reach the cluster manager at ${server}: ${reason}`);
  }
}

/** `GET /api/nodes`' filters and page; nothing set asks for every node, as the route always answered. */
export interface NodeListQuery {
  status?: NodeStatus;
  /** `key=value`; a node must carry all of them. */
  labels?: string[];
  limit?: number;
  cursor?: string;
}

/** One page of a list; `nextCursor` (the `X-Next-Cursor` header) when more follow. */
export interface Page<T> {
  items: T[];
  nextCursor?: string;
}

/** What `GET /api/jobs/:id/instances/:n/logs` is asked (see docs/api.md). */
export interface LogsQuery {
  follow?: boolean;
  /** Lines, or `all` (the default). */
  tail?: number | 'all';
  /** `10m`, an RFC 3339 time or epoch ms, as given. */
  since?: string;
  stream?: 'all' | 'stdout' | 'stderr';
}

export interface ApiClientOptions {
  server: string;
  token?: string;
  fetch?: typeof fetch;
  timeoutMs?: number;
}

/** The operator HTTP API of CONTRACT.md, one method per route; no formatting here. */
export class ApiClient {
  private readonly server: string;
  private readonly token: string | undefined;
  private readonly fetchImpl: typeof fetch;
  private readonly timeoutMs: number;

  constructor(options: ApiClientOptions) {
    this.server = options.server.replace(/\/+$/, '');
    this.token = options.token;
    this.fetchImpl = options.fetch ?? fetch;
    this.timeoutMs = options.timeoutMs ?? 15_000;
  }

  health(): Promise<Health> {
    return this.request('GET', '/api/health');
  }

  async listNodes(query: NodeListQuery = {}): Promise<Page<NodeView>> {
    const params = new URLSearchParams();
    if (query.status) params.set('status', query.status);
    for (const label of query.labels ?? []) params.append('label', label);
    if (query.limit !== undefined) params.set('limit', String(query.limit));
    if (query.cursor) params.set('cursor', query.cursor);
    const search = params.toString();
    const { body, headers } = await this.exchange<NodeView[]>(
      'GET',
      `/api/nodes${search ? `?${search}` : ''}`,
    );
    const nextCursor = headers.get('x-next-cursor');
    return { items: body, ...(nextCursor ? { nextCursor } : {}) };
  }

  getNode(ref: string): Promise<NodeView & Record<string, unknown>> {
    return this.request('GET', `/api/nodes/${encodeURIComponent(ref)}`);
  }

  /** Cordons (`true`) or uncordons a node. */
  cordonNode(ref: string, cordoned: boolean): Promise<NodeView> {
    return this.request('POST', `/api/nodes/${encodeURIComponent(ref)}/${cordoned ? 'cordon' : 'uncordon'}`);
  }

  /** Starts draining a node: everything there moves away, make-before-break. */
  drainNode(ref: string): Promise<NodeView> {
    return this.request('POST', `/api/nodes/${encodeURIComponent(ref)}/drain`);
  }

  /** Sets (a value) or removes (null) labels on a node. */
  labelNode(ref: string, patch: Record<string, string | null>): Promise<NodeView> {
    return this.request('PATCH', `/api/nodes/${encodeURIComponent(ref)}/labels`, patch);
  }

  removeNode(
    ref: string,
  ): Promise<{ id: string; name: string; placedAgain: number; finished: number; jobsDeleted: number }> {
    return this.request('DELETE', `/api/nodes/${encodeURIComponent(ref)}`);
  }

  createToken(name: string, role: string, ttlSeconds?: number): Promise<TokenInfo & { token: string }> {
    return this.request('POST', '/api/tokens', {
      name,
      role,
      ...(ttlSeconds === undefined ? {} : { ttlSeconds }),
    });
  }

  listTokens(): Promise<TokenInfo[]> {
    return this.request('GET', '/api/tokens');
  }

  revokeToken(name: string): Promise<TokenInfo> {
    return this.request('DELETE', `/api/tokens/${encodeURIComponent(name)}`);
  }

  listJobs(): Promise<Job[]> {
    return this.request('GET', '/api/jobs');
  }

  getJob(ref: string): Promise<Job> {
    return this.request('GET', `/api/jobs/${encodeURIComponent(ref)}`);
  }

  /** The job, or undefined when there is none of that id or name. */
  async findJob(ref: string): Promise<Job | undefined> {
    try {
      return await this.getJob(ref);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return undefined;
      throw error;
    }
  }

  /** `POST /api/jobs?dryRun=true`: where each instance would go, or why not; nothing changes. */
  planJob(spec: unknown): Promise<JobPlan> {
    return this.request('POST', '/api/jobs?dryRun=true', spec);
  }

  /** `PUT /api/jobs/:id?dryRun=true`: what updating the job would change; nothing changes. */
  planUpdate(ref: string, spec: unknown): Promise<JobPlan> {
    return this.request('PUT', `/api/jobs/${encodeURIComponent(ref)}?dryRun=true`, spec);
  }

  /** `PUT /api/jobs/:id`: the job as it is now, with what the update did. */
  updateJob(ref: string, spec: unknown): Promise<Job & { change: JobChange }> {
    return this.request('PUT', `/api/jobs/${encodeURIComponent(ref)}`, spec);
  }

  jobVersions(ref: string): Promise<JobVersion[]> {
    return this.request('GET', `/api/jobs/${encodeURIComponent(ref)}/versions`);
  }

  createJob(spec: unknown): Promise<Job> {
    return this.request('POST', '/api/jobs', spec);
  }

  deleteJob(ref: string): Promise<unknown> {
    return this.request('DELETE', `/api/jobs/${encodeURIComponent(ref)}`);
  }

  moveInstance(ref: string, instance: number, to?: string): Promise<unknown> {
    return this.request(
      'POST',
      `/api/jobs/${encodeURIComponent(ref)}/move`,
      to ? { instance, to } : { instance },
    );
  }

  scaleJob(ref: string, replicas: number): Promise<unknown> {
    return this.request('POST', `/api/jobs/${encodeURIComponent(ref)}/replicate`, { replicas });
  }

  /** The newest events first; `query`: limit, type, job, node (id or name) and after (an event id). */
  listEvents(query: Record<string, string | number | undefined> = {}): Promise<ClusterEvent[]> {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) if (value !== undefined) params.set(key, String(value));
    const search = params.toString();
    return this.request('GET', search ? `/api/events?${search}` : '/api/events');
  }

  /**
   * `GET /api/jobs/:id/instances/:n/logs`: the body, as it streams. The timeout covers the answer's start only
   * (the cluster manager answers within 10 s whether the node opened the output); `signal` ends it any time.
   */
  async openLogs(
    ref: string,
    instance: number,
    query: LogsQuery,
    signal?: AbortSignal,
  ): Promise<ReadableStream<Uint8Array>> {
    const params = new URLSearchParams();
    if (query.follow) params.set('follow', 'true');
    if (query.tail !== undefined) params.set('tail', String(query.tail));
    if (query.since !== undefined) params.set('since', query.since);
    if (query.stream !== undefined) params.set('stream', query.stream);
    const search = params.toString();
    const path = `/api/jobs/${encodeURIComponent(ref)}/instances/${instance}/logs${search ? `?${search}` : ''}`;
    const controller = new AbortController();
    const timer = setTimeout(
      () => controller.abort(new DOMException('no answer in time', 'TimeoutError')),
      this.timeoutMs,
    );
    const stop = () => controller.abort(signal?.reason);
    signal?.addEventListener('abort', stop, { once: true });
    let response: Response;
    try {
      response = await this.fetchImpl(`${this.server}${path}`, {
        headers: { accept: 'text/plain', ...(this.token ? { authorization: `Bearer ${this.token}` } : {}) },
        signal: controller.signal,
      });
    } catch (error) {
      signal?.removeEventListener('abort', stop);
      throw new ServerUnreachableError(this.server, describeFetchFailure(controller.signal.reason ?? error));
    } finally {
      clearTimeout(timer);
    }
    if (!response.ok || !response.body) {
      signal?.removeEventListener('abort', stop);
      throw new ApiError(response.status, errorBodyOf(response, parseBody(await response.text())));
    }
    return response.body;
  }

  /**
   * `GET /api/stream` with `query` (kinds, job, node, type), from after `lastEventId` when given: the body of the
   * open stream, read until `signal` aborts it; an ApiError for any other answer.
   */
  async openStream(
    query: Record<string, string | undefined>,
    lastEventId: number | undefined,
    signal: AbortSignal,
  ): Promise<ReadableStream<Uint8Array>> {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) if (value !== undefined) params.set(key, value);
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (lastEventId !== undefined) headers['last-event-id'] = String(lastEventId);
    let response: Response;
    try {
      response = await this.fetchImpl(`${this.server}/api/stream?${params}`, { headers, signal });
    } catch (error) {
      throw new ServerUnreachableError(this.server, describeFetchFailure(error));
    }
    if (!response.ok || !response.body)
      throw new ApiError(response.status, errorBodyOf(response, parseBody(await response.text())));
    return response.body;
  }

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    return (await this.exchange<T>(method, path, body)).body;
  }

  private async exchange<T>(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ body: T; headers: Headers }> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let response: Response;
    try {
      response = await this.fetchImpl(`${this.server}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (error) {
      throw new ServerUnreachableError(this.server, describeFetchFailure(error));
    }
    const text = await response.text();
    const parsed = parseBody(text);
    if (!response.ok) throw new ApiError(response.status, errorBodyOf(response, parsed));
    return { body: parsed as T, headers: response.headers };
  }
}

function parseBody(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The API's own error body when it sent one; otherwise something as useful as the status line. */
function errorBodyOf(response: Response, parsed: unknown): ApiErrorBody {
  const wrapped = ApiErrorBodySchema.safeParse((parsed as { error?: unknown } | undefined)?.error);
  if (wrapped.success) return wrapped.data;
  // A short text answer says more than the status line (the HTTPS port answering plain HTTP, for one).
  if (typeof parsed === 'string' && parsed.trim() && parsed.length <= 500)
    return { code: `http_${response.status}`, message: parsed.trim() };
  return {
    code: `http_${response.status}`,
    message: `HTTP ${response.status} ${response.statusText}`.trim(),
  };
}

const NETWORK_ERRORS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'timed out',
  UND_ERR_CONNECT_TIMEOUT: 'timed out connecting',
};

/** undici hides the useful part (ECONNREFUSED, ENOTFOUND) in `cause`. */
function describeFetchFailure(error: unknown): string {
  if (error instanceof DOMException && error.name === 'TimeoutError') return 'no answer in time';
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  if (cause?.code && NETWORK_ERRORS[cause.code]) return `${NETWORK_ERRORS[cause.code]} (${cause.code})`;
  // TLS: a certificate from another CA, a name not in it, a plain-text server.
  if (cause?.message) return describeConnectError(cause);
  return cause?.code ?? (error as Error).message;
}
