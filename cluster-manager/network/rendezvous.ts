import { createSocket, type Socket } from 'node:dgram';
import type { Logger } from '../../shared/index.js';
import type { RelayDirectory } from './relay-directory.js';

/** A probe: type 5, 3 zero bytes, 16 bytes the prober chose (an off-path sender cannot guess them). */
export const PROBE_BYTES = 20;
/** The answer: type 6, 3 zero bytes, the probe's 16 bytes, the address (4) and port (2) the probe came from. */
export const ANSWER_BYTES = 26;
const TYPE_PROBE = 5;
const TYPE_ANSWER = 6;
/** To relay: type 7, 3 zero bytes, the receiving node's relay id (8), the message; passed on as type 8 with the
 * sending node's relay id instead. */
const TYPE_TO_RELAY = 7;
const TYPE_RELAYED = 8;
const RELAY_HEADER = 12;

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
      message[0] === TYPE_TO_RELAY
        ? rendezvous.relay(message, from.address, from.port)
        : rendezvous.answer(message, from.address, from.port),
    );
    socket.on('error', (error) => logger.warn({ err: error.message }, 'overlay rendezvous port error'));
    return rendezvous;
  }

  private answer(message: Buffer, address: string, port: number): void {
    const octets = address.split('.').map(Number);
    if (message.length !== PROBE_BYTES || message[0] !== TYPE_PROBE || octets.length !== 4) {
      this.counters.ignored++;
      return;
    }
    this.counters.probes++;
    const answer = Buffer.alloc(ANSWER_BYTES);
    answer[0] = TYPE_ANSWER;
    message.copy(answer, 4, 4, PROBE_BYTES);
    for (const [i, octet] of octets.entries()) answer[20 + i] = octet;
    answer.writeUInt16BE(port, 24);
    this.socket.send(answer, port, address);
  }

  private relay(message: Buffer, address: string, port: number): void {
    const from = this.relays.idAt(address, port);
    const to =
      message.length > RELAY_HEADER ? this.relays.endpointOf(message.toString('hex', 4, 12)) : undefined;
    if (!from || !to) {
      this.counters.ignored++;
      return;
    }
    // In place: the type and the id change, the message behind them goes on as it came.
    message[0] = TYPE_RELAYED;
    message.write(from, 4, 'hex');
    this.counters.relayed++;
    this.counters.relayedBytes += message.length;
    this.socket.send(message, to.port, to.ip);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}
