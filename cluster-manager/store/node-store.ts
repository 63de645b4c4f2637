import type { NodeInfo, NodeStatus, NodeTelemetry } from '../../shared/index.js';
import { ChangeFeed } from './change-feed.js';
import type { Db } from './database.js';

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
  };
}

/** Nodes and their latest telemetry. Telemetry is kept in memory and written at most every few seconds. */
export class NodeStore {
  /** Node ids whose status or overlay endpoint changed. */
  readonly changes = new ChangeFeed();

  constructor(private readonly db: Db) {}

  list(): NodeRecord[] {
    return (this.db.prepare('SELECT * FROM nodes ORDER BY name').all() as NodeRow[]).map(fromRow);
  }

  get(id: string): NodeRecord | undefined {
    const row = this.db.prepare('SELECT * FROM nodes WHERE id = ?').get(id) as NodeRow | undefined;
    return row ? fromRow(row) : undefined;
  }

  /** By id first, else by name. */
  find(idOrName: string): NodeRecord | undefined {
    const row = this.db
      .prepare('SELECT * FROM nodes WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1')
      .get(idOrName, idOrName, idOrName) as NodeRow | undefined;
    return row ? fromRow(row) : undefined;
  }

  /** The node's name for messages meant for people; its id when it is unknown. */
  nameOf(id: string): string {
    const row = this.db.prepare('SELECT name FROM nodes WHERE id = ?').get(id) as
      | { name: string }
      | undefined;
    return row?.name ?? id;
  }

  findByName(name: string): NodeRecord | undefined {
    const row = this.db.prepare('SELECT * FROM nodes WHERE name = ?').get(name) as NodeRow | undefined;
    return row ? fromRow(row) : undefined;
  }

  upsert(node: Omit<NodeRecord, 'telemetry' | 'subnet' | 'publicIp' | 'udpPort'>): void {
    this.db
      .prepare(
        `INSERT INTO nodes (id, name, secret_hash, info, address, status, registered_at, last_seen)
         VALUES (@id, @name, @secretHash, @info, @address, @status, @registeredAt, @lastSeen)
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, secret_hash = excluded.secret_hash,
           info = excluded.info, address = excluded.address, status = excluded.status,
           last_seen = excluded.last_seen`,
      )
      .run({ ...node, info: JSON.stringify(node.info) });
  }

  setStatus(id: string, status: NodeStatus): void {
    this.db.prepare('UPDATE nodes SET status = ? WHERE id = ?').run(status, id);
    this.changes.emit(id);
  }

  /** A node's worker subnet is set once and kept: see OverlayAddresses. */
  setSubnet(id: string, subnet: string): void {
    this.db.prepare('UPDATE nodes SET subnet = ? WHERE id = ?').run(subnet, id);
  }

  /** Every worker subnet handed out, as CIDR blocks. */
  subnets(): string[] {
    return (
      this.db.prepare('SELECT subnet FROM nodes WHERE subnet IS NOT NULL').all() as { subnet: string }[]
    ).map((row) => row.subnet);
  }

  /** Stores the overlay endpoint; returns whether it changed. */
  setEndpoint(id: string, publicIp: string, udpPort: number): boolean {
    const changed =
      this.db
        .prepare(
          `UPDATE nodes SET public_ip = ?, udp_port = ?
           WHERE id = ? AND (public_ip IS NOT ? OR udp_port IS NOT ?)`,
        )
        .run(publicIp, udpPort, id, publicIp, udpPort).changes === 1;
    if (changed) this.changes.emit(id);
    return changed;
  }

  recordTelemetry(id: string, telemetry: NodeTelemetry, seenAt: number): void {
    this.db
      .prepare('UPDATE nodes SET telemetry = ?, last_seen = ? WHERE id = ?')
      .run(JSON.stringify(telemetry), seenAt, id);
  }
}
