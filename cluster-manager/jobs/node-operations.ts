import { notFound } from '../errors.js';
import type { NodeRecord, Store } from '../store/index.js';
import type { Evaluations } from './evaluations.js';

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
  ) {}

  /** Cordons (`true`) or uncordons the node, by id or name; the record after. */
  setCordoned(ref: string, cordoned: boolean): NodeRecord {
    const node = this.find(ref);
    if (node.cordoned === cordoned) return node;
    this.store.transaction(() => {
      this.store.nodes.setCordoned(node.id, cordoned);
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
