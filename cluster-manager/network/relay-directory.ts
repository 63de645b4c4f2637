import { type OverlayEndpoint, relayId } from '../../shared/index.js';

/**
 * Who the relay (the rendezvous port) passes packets between: each node with an overlay key, by its relay id (the
 * first 8 bytes of SHA-256 of the key, as net managers compute it) and by the address and port its probes come
 * from (its NAT's mapping towards this port, which it announces over its own MQTT login). Only packets from such
 * an address are relayed, and only to such a node: the relay is no open proxy.
 */
export class RelayDirectory {
  private readonly byNode = new Map<string, { id: string; endpoint: string }>();
  private readonly byId = new Map<string, OverlayEndpoint>();
  private readonly idByEndpoint = new Map<string, string>();

  /** A node announced its key and where its probes come from. */
  set(nodeId: string, publicKey: string, endpoint: OverlayEndpoint): void {
    this.remove(nodeId);
    const id = relayId(Buffer.from(publicKey, 'base64')).toString('hex');
    const key = `${endpoint.ip}:${endpoint.port}`;
    this.byNode.set(nodeId, { id, endpoint: key });
    this.byId.set(id, endpoint);
    this.idByEndpoint.set(key, id);
  }

  remove(nodeId: string): void {
    const entry = this.byNode.get(nodeId);
    if (!entry) return;
    this.byNode.delete(nodeId);
    this.byId.delete(entry.id);
    if (this.idByEndpoint.get(entry.endpoint) === entry.id) this.idByEndpoint.delete(entry.endpoint);
  }

  /** The relay id (hex) of the node whose probes come from address:port. */
  idAt(address: string, port: number): string | undefined {
    return this.idByEndpoint.get(`${address}:${port}`);
  }

  /** Where the node with this relay id (hex) is reached. */
  endpointOf(id: string): OverlayEndpoint | undefined {
    return this.byId.get(id);
  }

  get size(): number {
    return this.byNode.size;
  }
}
