import type { HostAllowances, JobDefinition, Sensor, Technology } from '../../shared/index.js';

/** What the scheduler knows of a node: a snapshot, no I/O. */
export interface SchedulableNode {
  id: string;
  name: string;
  status: 'online' | 'offline';
  /** An operator cordoned it: it takes no new instance (what runs there stays). */
  cordoned?: boolean;
  arch: string;
  runtimes: Technology[];
  labels: Record<string, string>;
  sensors: Sensor[];
  /** What it lets jobs use of its host (`native` paths, devices); undefined: not said (an older node engine). */
  allowed?: HostAllowances;
  capacity: { cpus: number; memoryBytes: number; gpus: number };
  /** What the instances placed here (of every job) requested. */
  allocated: { cpus: number; memoryBytes: number; gpus: number };
  /** Host ports taken by instances placed here, as `tcp/8080`. */
  usedHostPorts: string[];
  /** Instances placed here, by job id: the spread score. */
  instancesByJob: Record<string, number>;
  /** Instances placed here, of every job: spread by default. */
  instanceCount: number;
}

export interface Placement {
  instance: number;
  nodeId: string;
}

/** An instance that fits nowhere, with the reason each node was turned down (by node name). */
export interface Unplaced {
  instance: number;
  reasons: Record<string, string>;
  /** One line for the instance's `detail`, e.g. `no node fits: worker-1: not enough memory (...)`. */
  summary: string;
}

export interface PlacementResult {
  placements: Placement[];
  unplaced: Unplaced[];
}

/** A feasibility filter: null when the node can take one instance of the job, else why not, in words. */
export type FeasibilityCheck = (job: JobDefinition, node: SchedulableNode) => string | null;

/** Where a moved instance goes, or why it cannot move (reasons by node name, as for `Unplaced`). */
export type MoveTarget = { nodeId: string } | { reasons: Record<string, string>; summary: string };
