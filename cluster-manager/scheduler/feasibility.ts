import { type JobDefinition, refusedByAllowances } from '../../shared/index.js';
import type { FeasibilityCheck, SchedulableNode } from './types.js';

const MIB = 1024 * 1024;
// Requests like 0.1 + 0.2 cpus must not be refused over floating-point dust.
const EPSILON = 1e-9;

export function checkOnline(_job: JobDefinition, node: SchedulableNode): string | null {
  return node.status === 'online' ? null : 'offline';
}

export function checkCordoned(_job: JobDefinition, node: SchedulableNode): string | null {
  return node.cordoned ? 'cordoned' : null;
}

export function checkRuntime(job: JobDefinition, node: SchedulableNode): string | null {
  if (node.runtimes.includes(job.technology)) return null;
  const has = node.runtimes.length > 0 ? node.runtimes.join(', ') : 'none';
  return `no ${job.technology} runtime (has ${has})`;
}

/** A node refuses native paths and devices it was not told to allow: such a node is no place for the job. */
export function checkHostAllowances(job: JobDefinition, node: SchedulableNode): string | null {
  return node.allowed ? refusedByAllowances(job, node.allowed) : null;
}

export function checkArch(job: JobDefinition, node: SchedulableNode): string | null {
  const wanted = job.constraints.arch;
  if (!wanted || wanted.length === 0 || (wanted as string[]).includes(node.arch)) return null;
  return `arch ${node.arch} not in constraints.arch (${wanted.join(', ')})`;
}

export function checkNamedNodes(job: JobDefinition, node: SchedulableNode): string | null {
  const named = job.constraints.nodes;
  if (!named || named.length === 0 || named.includes(node.id) || named.includes(node.name)) return null;
  return `not named in constraints.nodes (${abbreviate(named)})`;
}

export function checkLabels(job: JobDefinition, node: SchedulableNode): string | null {
  for (const [key, value] of Object.entries(job.constraints.labels ?? {})) {
    const actual = node.labels[key];
    if (actual === undefined) return `label ${key} missing (wanted ${key}=${value})`;
    if (actual !== value) return `label ${key}=${actual} (wanted ${key}=${value})`;
  }
  return null;
}

export function checkSensors(job: JobDefinition, node: SchedulableNode): string | null {
  for (const wanted of job.constraints.sensors ?? []) {
    const matches = node.sensors.filter((sensor) => sensor.type === wanted || sensor.id === wanted);
    if (matches.length === 0) return `sensor ${wanted} missing`;
    if (!matches.some((sensor) => sensor.available)) return `sensor ${wanted} not available`;
  }
  return null;
}

export function checkCpus(job: JobDefinition, node: SchedulableNode): string | null {
  const asked = job.resources.cpus;
  if (asked === undefined) return null;
  const free = node.capacity.cpus - node.allocated.cpus;
  if (free + EPSILON >= asked) return null;
  return `not enough cpus (${round(asked)} asked, ${round(Math.max(0, free))} free)`;
}

export function checkMemory(job: JobDefinition, node: SchedulableNode): string | null {
  const askedMB = job.resources.memoryMB;
  if (askedMB === undefined) return null;
  const free = node.capacity.memoryBytes - node.allocated.memoryBytes;
  if (free >= askedMB * MIB) return null;
  return `not enough memory (${askedMB} MiB asked, ${Math.floor(Math.max(0, free) / MIB)} MiB free)`;
}

export function checkGpus(job: JobDefinition, node: SchedulableNode): string | null {
  const asked = job.resources.gpus;
  if (!asked) return null;
  const free = node.capacity.gpus - node.allocated.gpus;
  if (free >= asked) return null;
  return `not enough gpus (${asked} asked, ${Math.max(0, free)} free)`;
}

export function checkHostPorts(job: JobDefinition, node: SchedulableNode): string | null {
  const taken = hostPortsOf(job).filter((port) => node.usedHostPorts.includes(port));
  if (taken.length === 0) return null;
  return `host port ${taken.join(', ')} already in use`;
}

/** In the order a user expects to read them: the cheap, coarse facts first, resources last. */
export const feasibilityChecks: readonly FeasibilityCheck[] = [
  checkOnline,
  checkCordoned,
  checkRuntime,
  checkHostAllowances,
  checkArch,
  checkNamedNodes,
  checkLabels,
  checkSensors,
  checkCpus,
  checkMemory,
  checkGpus,
  checkHostPorts,
];

/** The first reason the node cannot take one instance of the job, or null when it can. */
export function whyInfeasible(job: JobDefinition, node: SchedulableNode): string | null {
  for (const check of feasibilityChecks) {
    const reason = check(job, node);
    if (reason !== null) return reason;
  }
  return null;
}

/** The job's host ports as `tcp/8080`, the form nodes keep in `usedHostPorts`. */
export function hostPortsOf(job: JobDefinition): string[] {
  return job.ports.filter((port) => port.host !== undefined).map((port) => `${port.protocol}/${port.host}`);
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}

function abbreviate(names: string[]): string {
  const shown = names.slice(0, 5).join(', ');
  return names.length > 5 ? `${shown}, ... ${names.length - 5} more` : shown;
}
