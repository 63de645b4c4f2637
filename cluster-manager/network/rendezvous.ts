import { createSocket, type Socket } from 'node:dgram';
import {
  type Logger,
  OVERLAY_MESSAGE,
  PROBE_ANSWER_BYTES,
  PROBE_BYTES,
  RELAY_HEADER_BYTES,
} from '../../shared/index.js';
import type { RelayDirectory } from './relay-directory.js';

/**
 * The cluster manager's UDP rendezvous port (STUN's idea, cut down): a net manager sends a probe from its
 * overlay socket and learns the address and port its packets leave its network with (its NAT's mapping), which it
 * then announces as a candidate for peers to try. The answer is barely longer than the probe, so the port is no
 * amplifier.
 *
 * It is also the relay for two workers no direct path joins (both behind NATs that cannot be punched through):
 * a sealed message from a node (recognised by the address its probes come from) to another node (by its relay
 * id) is passed on unread, with the sender's id in front; anything else is ignored and counted.
 */
export class RendezvousPort {
  readonly counters = { probes: 0, relayed: 0, relayedBytes: 0, ignored: 0 };
  private constructor(
    private readonly socket: Socket,
    readonly port: number,
    private readonly relays: RelayDirectory,
  ) {}

  static async start(
    host: string,
    port: number,
    relays: RelayDirectory,
    logger: Logger,
  ): Promise<RendezvousPort> {
    const socket = createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, host, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    const rendezvous = new RendezvousPort(socket, socket.address().port, relays);
    socket.on('message', (message, from) =>
      message[0] === OVERLAY_MESSAGE.toRelay
        ? rendezvous.relay(message, from.address, from.port)
        : rendezvous.answer(message, from.address, from.port),
    );
    socket.on('error', (error) => logger.warn({ err: error.message }, 'overlay rendezvous port error'));
    return rendezvous;
  }

  private answer(message: Buffer, address: string, port: number): void {
    const octets = address.split('.').map(Number);
    if (message.length !== PROBE_BYTES || message[0] !== OVERLAY_MESSAGE.probe || octets.length !== 4) {
      this.counters.ignored++;
      return;
    }
    this.counters.probes++;
    const answer = Buffer.alloc(PROBE_ANSWER_BYTES);
    answer[0] = OVERLAY_MESSAGE.probeAnswer;
    message.copy(answer, 4, 4, PROBE_BYTES);
    for (const [i, octet] of octets.entries()) answer[20 + i] = octet;
    answer.writeUInt16BE(port, 24);
    this.socket.send(answer, port, address);
  }

  private relay(message: Buffer, address: string, port: number): void {
    const from = this.relays.idAt(address, port);
    const to =
      message.length > RELAY_HEADER_BYTES
        ? this.relays.endpointOf(message.toString('hex', 4, 12))
        : undefined;
    if (!from || !to) {
      this.counters.ignored++;
      return;
    }
    // In place: the type and the id change, the message behind them goes on as it came.
    message[0] = OVERLAY_MESSAGE.relayed;
    message.write(from, 4, 'hex');
    this.counters.relayed++;
    this.counters.relayedBytes += message.length;
    this.socket.send(message, to.port, to.ip);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}
