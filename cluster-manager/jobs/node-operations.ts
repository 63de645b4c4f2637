import { notFound } from '../errors.js';
import type { NodeRecord, Store } from '../store/index.js';
import type { Evaluations } from './evaluations.js';
import { countsTowardsReplicas } from './instance-states.js';

/** Label changes as `PATCH /api/nodes/:id/labels` takes them: a value sets a label, null removes it. */
export type LabelPatch = Record<string, string | null>;

/**
 * What an operator changes on a node at run time (Kubernetes' cordon and `kubectl label node`): cordoned, it takes
 * no new instance, and what runs there stays; labels set or removed over those the node announces, kept across
 * its registrations. Each change is an event; one that may let a waiting instance fit has the scheduler look again.
 */
export class NodeOperations {
  constructor(
    private readonly store: Store,
    private readonly evaluations: Evaluations,
    /** A drain started: the driver looks at once rather than at its next tick. */
    private readonly drained: () => void = () => {},
  ) {}

  /**
   * Cordons (`true`) or uncordons the node, by id or name; the record after. Uncordoning ends a drain under way
   * (what moved stays moved).
   */
  setCordoned(ref: string, cordoned: boolean): NodeRecord {
    const node = this.find(ref);
    if (node.cordoned === cordoned && !(node.draining && !cordoned)) return node;
    this.store.transaction(() => {
      this.store.nodes.setCordoned(node.id, cordoned);
      if (!cordoned && node.draining) {
        this.store.nodes.setDraining(node.id, false);
        this.store.events.record('node.drain-cancelled', `node ${node.name}: drain cancelled by uncordon`, {
          nodeId: node.id,
        });
      }
      this.store.events.record(
        cordoned ? 'node.cordoned' : 'node.uncordoned',
        cordoned
          ? `node ${node.name} cordoned: no new instances there`
          : `node ${node.name} uncordoned: it takes new instances`,
        { nodeId: node.id },
      );
    });
    if (!cordoned) this.evaluations.unblock('node-updated');
    return this.store.nodes.get(node.id)!;
  }

  /**
   * Drains the node (`kubectl drain`, `nomad node drain`): cordoned, and every instance there moved away
   * make-before-break by the Drains driver, a job's `update.maxParallel` at a time. Again: no change.
   */
  drain(ref: string): NodeRecord {
    const node = this.find(ref);
    if (node.draining) return node;
    const count = this.store.jobs
      .instancesOnNode(node.id)
      .filter((instance) => countsTowardsReplicas(instance.status)).length;
    this.store.transaction(() => {
      if (!node.cordoned) this.store.nodes.setCordoned(node.id, true);
      this.store.nodes.setDraining(node.id, true);
      this.store.events.record('node.draining', `node ${node.name} draining: ${count} instance(s) to move`, {
        nodeId: node.id,
      });
    });
    this.drained();
    return this.store.nodes.get(node.id)!;
  }

  /** Applies label changes over the operator's earlier ones; the record after. */
  patchLabels(ref: string, patch: LabelPatch): NodeRecord {
    const node = this.find(ref);
    const operatorLabels = { ...node.operatorLabels, ...patch };
    if (JSON.stringify(operatorLabels) === JSON.stringify(node.operatorLabels)) return node;
    const said = Object.entries(patch)
      .map(([key, value]) => (value === null ? `${key}-` : `${key}=${value}`))
      .join(', ');
    this.store.transaction(() => {
      this.store.nodes.setOperatorLabels(node.id, operatorLabels);
      this.store.events.record('node.labels', `node ${node.name} labels: ${said}`, { nodeId: node.id });
    });
    this.evaluations.unblock('node-updated');
    return this.store.nodes.get(node.id)!;
  }

  private find(ref: string): NodeRecord {
    const node = this.store.nodes.find(ref);
    if (!node) throw notFound('node', ref);
    return node;
  }
}
