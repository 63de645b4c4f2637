import { stringify } from 'yaml';
import type {
  ApiErrorBody,
  ClusterEvent,
  InstanceStatus,
  Job,
  JobVersion,
  NodeView,
} from '../../shared/index.js';

export const OUTPUT_FORMATS = ['table', 'yaml', 'json'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/** Left-aligned columns three spaces apart, as kubectl and nomad print them. */
export function formatTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, column) =>
    Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column] ?? 0)))
      .join('   ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

export function formatNodesTable(nodes: NodeView[], now: number): string {
  const rows = nodes.map((node) => [
    node.name,
    node.id,
    // kubectl's way: Ready,SchedulingDisabled.
    node.cordoned ? `${node.status},cordoned` : node.status,
    node.arch,
    formatPercent(node.usage?.cpuPercent),
    formatPercent(node.usage?.memoryPercent),
    node.runtimes.join(','),
    formatAge(node.lastSeen, now),
  ]);
  return formatTable(['NAME', 'ID', 'STATUS', 'ARCH', 'CPU%', 'MEM%', 'RUNTIMES', 'LAST-SEEN'], rows);
}

export function formatJobsTable(jobs: Job[]): string {
  const rows = jobs.map((job) => [job.name, job.id, job.state, formatInstanceCounts(job.instanceCounts)]);
  return formatTable(['NAME', 'ID', 'STATE', 'INSTANCES'], rows);
}

/** A job's versions, newest first: the current one marked, stable ones (what a revert goes back to) said. */
export function formatVersionsTable(versions: JobVersion[], current: number): string {
  const rows = versions.map((version) => [
    `${version.version}${version.version === current ? ' (current)' : ''}`,
    formatTimestamp(version.createdAt),
    version.stable ? 'yes' : 'no',
    version.spec.image,
  ]);
  return formatTable(['VERSION', 'CREATED', 'STABLE', 'IMAGE'], rows);
}

/** One event on one line, as `events -f` prints them as they come. */
export function formatEventLine(event: ClusterEvent): string {
  return `${formatTimestamp(event.ts)}  ${event.type}  ${event.message}`;
}

export function formatEventsTable(events: ClusterEvent[]): string {
  const rows = events.map((event) => [formatTimestamp(event.ts), event.type, event.message]);
  return formatTable(['TIME', 'TYPE', 'MESSAGE'], rows);
}

export function formatTokensTable(
  tokens: { name: string; role: string; state: string; createdAt: number; expiresAt: number | null }[],
): string {
  const rows = tokens.map((token) => [
    token.name,
    token.role,
    token.state,
    formatTimestamp(token.createdAt),
    token.expiresAt === null ? 'never' : formatTimestamp(token.expiresAt),
  ]);
  return formatTable(['NAME', 'ROLE', 'STATE', 'CREATED', 'EXPIRES'], rows);
}

/** `2/3 running, 1 pending`: running first since that is what an operator looks for. */
export function formatInstanceCounts(counts: Partial<Record<InstanceStatus, number>> | undefined): string {
  const entries = Object.entries(counts ?? {}).filter(([, count]) => (count ?? 0) > 0) as [string, number][];
  const total = entries.reduce((sum, [, count]) => sum + count, 0);
  if (total === 0) return '0';
  const others = entries
    .filter(([status]) => status !== 'running')
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([status, count]) => `${count} ${status}`);
  return [`${counts?.running ?? 0}/${total} running`, ...others].join(', ');
}

export function formatPercent(value: number | null | undefined): string {
  return typeof value === 'number' && Number.isFinite(value) ? `${Math.round(value)}%` : '-';
}

/** `4s ago`, `3m ago`, `2h ago`, `5d ago`; `never` for a node that never sent telemetry. */
export function formatAge(ts: number | null | undefined, now: number): string {
  if (typeof ts !== 'number') return 'never';
  const seconds = Math.max(0, Math.round((now - ts) / 1000));
  if (seconds < 120) return `${seconds}s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 120) return `${minutes}m ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours}h ago`;
  return `${Math.floor(hours / 24)}d ago`;
}

/** UTC to the second, so a log and an event line up whatever the operator's time zone. */
export function formatTimestamp(ts: number): string {
  return `${new Date(ts).toISOString().slice(0, 19)}Z`;
}

export function formatYaml(value: unknown): string {
  return stringify(value, { lineWidth: 0 }).trimEnd();
}

export function formatJson(value: unknown): string {
  return JSON.stringify(value, null, 2);
}

/** `value` in the asked format; `table` falls back to YAML where there is no table for it. */
export function formatOutput(value: unknown, format: OutputFormat, table?: () => string): string {
  if (format === 'json') return formatJson(value);
  if (format === 'table' && table) return table();
  return formatYaml(value);
}

/** The API's message, then each bad field on its own line: what a user needs to fix a spec. */
export function formatApiError(error: ApiErrorBody, status?: number): string {
  const lines = [`error: ${error.message}${status ? ` (HTTP ${status})` : ''}`];
  for (const detail of error.details ?? []) lines.push(`  ${detail.path}: ${detail.message}`);
  return lines.join('\n');
}
