import type { NodeInfo, NodeStatus, NodeTelemetry, OverlayEndpoint } from '../../shared/index.js';
import { ChangeFeed } from './change-feed.js';
import type { Db } from './database.js';
import type { Indexed, UndoLog } from './undo-log.js';

export interface NodeRecord {
  id: string;
  name: string;
  secretHash: string;
  info: NodeInfo;
  address: string | null;
  status: NodeStatus;
  registeredAt: number;
  lastSeen: number | null;
  telemetry: NodeTelemetry | null;
  subnet: string | null;
  /** The overlay endpoint its net manager announced: peers send overlay UDP here. */
  publicIp: string | null;
  udpPort: number | null;
  /** Its net manager's overlay key (X25519, base64): peers handshake with it. */
  overlayKey: string | null;
  /** Other endpoints its net manager announced (local addresses, its NAT's mapping): peers try them all. */
  overlayCandidates: OverlayEndpoint[];
  /** An operator cordoned it: nothing new is placed or moved here; what runs here stays. */
  cordoned: boolean;
  /** An operator is draining it: what runs here moves away, make-before-break (it is cordoned too). */
  draining: boolean;
  /** Labels an operator set (a value) or removed (null) at run time, over those the node announces. */
  operatorLabels: Record<string, string | null>;
}

/** A node's labels: those it announces, with an operator's changes over them (see NodeRecord.operatorLabels). */
export function labelsOf(node: Pick<NodeRecord, 'info' | 'operatorLabels'>): Record<string, string> {
  const labels = { ...node.info.labels };
  for (const [key, value] of Object.entries(node.operatorLabels)) {
    if (value === null) delete labels[key];
    else labels[key] = value;
  }
  return labels;
}

interface NodeRow {
  id: string;
  name: string;
  secret_hash: string;
  info: string;
  address: string | null;
  status: NodeStatus;
  registered_at: number;
  last_seen: number | null;
  telemetry: string | null;
  subnet: string | null;
  public_ip: string | null;
  udp_port: number | null;
  overlay_key: string | null;
  overlay_candidates: string | null;
  cordoned: number;
  draining: number;
  operator_labels: string;
}

function fromRow(row: NodeRow): NodeRecord {
  return {
    id: row.id,
    name: row.name,
    secretHash: row.secret_hash,
    info: JSON.parse(row.info) as NodeInfo,
    address: row.address,
    status: row.status,
    registeredAt: row.registered_at,
    lastSeen: row.last_seen,
    telemetry: row.telemetry ? (JSON.parse(row.telemetry) as NodeTelemetry) : null,
    subnet: row.subnet,
    publicIp: row.public_ip,
    udpPort: row.udp_port,
    overlayKey: row.overlay_key,
    overlayCandidates: row.overlay_candidates
      ? (JSON.parse(row.overlay_candidates) as OverlayEndpoint[])
      : [],
    cordoned: row.cordoned === 1,
    draining: row.draining === 1,
    operatorLabels: JSON.parse(row.operator_labels) as Record<string, string | null>,
  };
}

/**
 * Nodes, held in memory and written through to SQLite: every message from a node asks who it is, and at fleet
 * size that must not be a query and a JSON parse each time. Loaded once when the store opens; every write goes
 * to SQLite first, then to the map. Telemetry is written at most every few seconds (see NodeLiveness).
 * Records handed out are shared: callers copy before they change one.
 */
export class NodeStore {
  /** Node ids whose status or overlay endpoint changed. */
  readonly changes = new ChangeFeed();
  /** Node ids whose registration, labels or cordon changed: the rest of what a view of the node shows. */
  readonly updated = new ChangeFeed();
  private readonly byId = new Map<string, NodeRecord>();
  private infoVersion = 0;
  private readonly idByName = new Map<string, string>();
  /** The secret hashes of removed nodes: never a way in again. */
  private readonly removedSecrets = new Set<string>();

  constructor(
    private readonly db: Db,
    private readonly undo: UndoLog,
  ) {
    for (const row of db.prepare('SELECT * FROM nodes').all() as NodeRow[]) this.put(fromRow(row));
    for (const { secret_hash } of db.prepare('SELECT secret_hash FROM removed_nodes').all() as {
      secret_hash: string;
    }[])
      this.removedSecrets.add(secret_hash);
  }

  /** Every node, by name. */
  list(): NodeRecord[] {
    return [...this.byId.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  get count(): number {
    return this.byId.size;
  }

  /** The nodes an operator is draining, in no order: a walk over the map, no copy or sort of the fleet. */
  draining(): NodeRecord[] {
    const found: NodeRecord[] = [];
    for (const node of this.byId.values()) if (node.draining) found.push(node);
    return found;
  }

  /**
   * Rises whenever a node is added or its name, info, labels or cordon change (registrations, an operator):
   * views built on them rebuild.
   */
  get version(): number {
    return this.infoVersion;
  }

  get(id: string): NodeRecord | undefined {
    return this.byId.get(id);
  }

  /** By id first, else by name. */
  find(idOrName: string): NodeRecord | undefined {
    return this.byId.get(idOrName) ?? this.findByName(idOrName);
  }

  /** The node's name for messages meant for people; its id when it is unknown. */
  nameOf(id: string): string {
    return this.byId.get(id)?.name ?? id;
  }

  findByName(name: string): NodeRecord | undefined {
    const id = this.idByName.get(name);
    return id === undefined ? undefined : this.byId.get(id);
  }

  upsert(
    node: Omit<
      NodeRecord,
      | 'telemetry'
      | 'subnet'
      | 'publicIp'
      | 'udpPort'
      | 'overlayKey'
      | 'overlayCandidates'
      | 'cordoned'
      | 'draining'
      | 'operatorLabels'
    >,
  ): void {
    this.db
      .prepare(
        `INSERT INTO nodes (id, name, secret_hash, info, address, status, registered_at, last_seen)
         VALUES (@id, @name, @secretHash, @info, @address, @status, @registeredAt, @lastSeen)
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, secret_hash = excluded.secret_hash,
           info = excluded.info, address = excluded.address, status = excluded.status,
           last_seen = excluded.last_seen`,
      )
      .run({ ...node, info: JSON.stringify(node.info) });
    const previous = this.byId.get(node.id);
    const record = {
      telemetry: null,
      subnet: null,
      publicIp: null,
      udpPort: null,
      overlayKey: null,
      overlayCandidates: [],
      cordoned: false,
      draining: false,
      operatorLabels: {},
      ...previous,
      ...node,
    };
    // The info version rises with the change and again if it is taken back: views built on it rebuild.
    this.undo.swap(previous, record, this.index, () => this.infoChanged(node.id));
  }

  /**
   * Forgets the node (its subnet is free again) and revokes its secret for good: a node that presents it is
   * refused, also when it joins with the join token. Call inside the transaction that deals with its instances.
   */
  remove(id: string, now: number): void {
    const node = this.byId.get(id);
    if (!node) return;
    this.db.prepare('DELETE FROM nodes WHERE id = ?').run(id);
    this.db
      .prepare(
        'INSERT OR REPLACE INTO removed_nodes (secret_hash, node_id, name, removed_at) VALUES (?, ?, ?, ?)',
      )
      .run(node.secretHash, id, node.name, now);
    this.removedSecrets.add(node.secretHash);
    this.undo.record(() => this.removedSecrets.delete(node.secretHash));
    this.undo.swap(node, undefined, this.index, () => {
      this.infoVersion++;
      this.changes.emit(id);
    });
  }

  /** Whether this secret (its hash) belonged to a node an operator removed. */
  isRemovedSecret(secretHash: string): boolean {
    return this.removedSecrets.has(secretHash);
  }

  setStatus(id: string, status: NodeStatus): void {
    this.db.prepare('UPDATE nodes SET status = ? WHERE id = ?').run(status, id);
    this.patch(id, { status }, () => this.changes.emit(id));
  }

  /** Cordons the node (no new instances) or lets it take them again. */
  setCordoned(id: string, cordoned: boolean): void {
    this.db.prepare('UPDATE nodes SET cordoned = ? WHERE id = ?').run(cordoned ? 1 : 0, id);
    this.patch(id, { cordoned }, () => this.infoChanged(id));
  }

  /** Starts or ends a drain (see NodeRecord.draining). */
  setDraining(id: string, draining: boolean): void {
    this.db.prepare('UPDATE nodes SET draining = ? WHERE id = ?').run(draining ? 1 : 0, id);
    this.patch(id, { draining }, () => this.infoVersion++);
  }

  /** Sets the operator's label changes (a value sets a label, null removes it); they outlast registrations. */
  setOperatorLabels(id: string, operatorLabels: Record<string, string | null>): void {
    this.db
      .prepare('UPDATE nodes SET operator_labels = ? WHERE id = ?')
      .run(JSON.stringify(operatorLabels), id);
    this.patch(id, { operatorLabels }, () => this.infoChanged(id));
  }

  /** A node's worker subnet is set once and kept: see OverlayAddresses. */
  setSubnet(id: string, subnet: string): void {
    this.db.prepare('UPDATE nodes SET subnet = ? WHERE id = ?').run(subnet, id);
    this.patch(id, { subnet });
  }

  /** Every worker subnet handed out, as CIDR blocks. */
  subnets(): string[] {
    return [...this.byId.values()].flatMap((node) => (node.subnet ? [node.subnet] : []));
  }

  /** Stores the overlay endpoint, key and candidates; returns whether any changed. */
  setEndpoint(
    id: string,
    publicIp: string,
    udpPort: number,
    overlayKey: string | null = null,
    overlayCandidates: OverlayEndpoint[] = [],
  ): boolean {
    const node = this.byId.get(id);
    const candidates = JSON.stringify(overlayCandidates);
    if (
      !node ||
      (node.publicIp === publicIp &&
        node.udpPort === udpPort &&
        node.overlayKey === overlayKey &&
        JSON.stringify(node.overlayCandidates) === candidates)
    )
      return false;
    this.db
      .prepare(
        'UPDATE nodes SET public_ip = ?, udp_port = ?, overlay_key = ?, overlay_candidates = ? WHERE id = ?',
      )
      .run(publicIp, udpPort, overlayKey, candidates, id);
    this.patch(id, { publicIp, udpPort, overlayKey, overlayCandidates }, () => this.changes.emit(id));
    return true;
  }

  /** The node whose net manager announced this overlay key. */
  withOverlayKey(overlayKey: string): NodeRecord | undefined {
    for (const node of this.byId.values()) if (node.overlayKey === overlayKey) return node;
    return undefined;
  }

  recordTelemetry(id: string, telemetry: NodeTelemetry, seenAt: number): void {
    this.db
      .prepare('UPDATE nodes SET telemetry = ?, last_seen = ? WHERE id = ?')
      .run(JSON.stringify(telemetry), seenAt, id);
    this.patch(id, { telemetry, lastSeen: seenAt });
  }

  private infoChanged(id: string): void {
    this.infoVersion++;
    this.updated.emit(id);
  }

  /** Changes the node in memory; inside a transaction, how to take that back goes to the undo log. */
  private patch(id: string, change: Partial<NodeRecord>, changed?: () => void): void {
    const node = this.byId.get(id);
    if (node) this.undo.swap(node, { ...node, ...change }, this.index, changed);
  }

  private readonly index: Indexed<NodeRecord> = {
    put: (node) => this.put(node),
    drop: (node) => this.drop(node.id),
  };

  private put(node: NodeRecord): void {
    this.drop(node.id);
    this.byId.set(node.id, node);
    this.idByName.set(node.name, node.id);
  }

  private drop(id: string): void {
    const node = this.byId.get(id);
    if (!node) return;
    this.byId.delete(id);
    if (this.idByName.get(node.name) === id) this.idByName.delete(node.name);
  }
}
