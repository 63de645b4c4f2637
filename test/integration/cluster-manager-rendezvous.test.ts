import { createSocket, type Socket } from 'node:dgram';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { RelayDirectory } from '../../cluster-manager/network/relay-directory.js';
import { RendezvousPort } from '../../cluster-manager/network/rendezvous.js';
import { relayId } from '../../shared/index.js';
import { waitFor } from '../helpers/wait.js';

/** The cluster manager's UDP rendezvous port on loopback: probes answered, relaying only between known nodes. */
describe('the rendezvous port', () => {
  const open: { close(): unknown }[] = [];
  afterEach(async () => {
    for (const thing of open.splice(0)) await thing.close();
  });

  async function client(): Promise<{ socket: Socket; port: number; got: Buffer[] }> {
    const socket = createSocket('udp4');
    open.push(socket);
    const got: Buffer[] = [];
    socket.on('message', (message) => got.push(message));
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    return { socket, port: socket.address().port, got };
  }

  async function start(relays = new RelayDirectory()) {
    const rendezvous = await RendezvousPort.start('127.0.0.1', 0, relays, pino({ level: 'silent' }));
    open.push(rendezvous);
    return rendezvous;
  }

  it("answers a probe with the address and port it came from and the probe's own bytes, and nothing else", async () => {
    const rendezvous = await start();
    const prober = await client();
    const probe = Buffer.alloc(20);
    probe[0] = 5;
    probe.fill(0xab, 4);
    prober.socket.send(probe, rendezvous.port, '127.0.0.1');
    await waitFor(() => prober.got.length === 1, 'the answer');
    const answer = prober.got[0]!;
    expect(answer.length).toBe(26);
    expect(answer[0]).toBe(6);
    expect(answer.subarray(4, 20).equals(probe.subarray(4))).toBe(true);
    expect([...answer.subarray(20, 24)]).toEqual([127, 0, 0, 1]);
    expect(answer.readUInt16BE(24)).toBe(prober.port);
    // A short probe, another type, a relay request from nobody: no answer, counted.
    prober.socket.send(Buffer.alloc(19, 5), rendezvous.port, '127.0.0.1');
    prober.socket.send(Buffer.alloc(20, 9), rendezvous.port, '127.0.0.1');
    prober.socket.send(
      Buffer.concat([Buffer.from([7, 0, 0, 0]), Buffer.alloc(8), Buffer.from('x')]),
      rendezvous.port,
      '127.0.0.1',
    );
    await waitFor(() => rendezvous.counters.ignored === 3, 'three ignored');
    expect(prober.got).toHaveLength(1);
  });

  it("relays between nodes it knows, with the sender's id in front, and for nobody else", async () => {
    const relays = new RelayDirectory();
    const rendezvous = await start(relays);
    const alice = await client();
    const bob = await client();
    const stranger = await client();
    const aliceKey = Buffer.alloc(32, 1);
    const bobKey = Buffer.alloc(32, 2);
    relays.set('alice', aliceKey.toString('base64'), { ip: '127.0.0.1', port: alice.port });
    relays.set('bob', bobKey.toString('base64'), { ip: '127.0.0.1', port: bob.port });
    const toBob = Buffer.concat([Buffer.from([7, 0, 0, 0]), relayId(bobKey), Buffer.from('sealed, unread')]);
    alice.socket.send(toBob, rendezvous.port, '127.0.0.1');
    await waitFor(() => bob.got.length === 1, 'the relayed message');
    const relayed = bob.got[0]!;
    expect(relayed[0]).toBe(8);
    expect(relayed.subarray(4, 12).equals(relayId(aliceKey))).toBe(true);
    expect(relayed.subarray(12).toString()).toBe('sealed, unread');
    // From an address no node announced, or to an id nobody has: nothing relayed.
    stranger.socket.send(toBob, rendezvous.port, '127.0.0.1');
    const toNobody = Buffer.concat([
      Buffer.from([7, 0, 0, 0]),
      relayId(Buffer.alloc(32, 3)),
      Buffer.from('x'),
    ]);
    alice.socket.send(toNobody, rendezvous.port, '127.0.0.1');
    await waitFor(() => rendezvous.counters.ignored === 2, 'two ignored');
    // A removed node is relayed to no more.
    relays.remove('bob');
    alice.socket.send(toBob, rendezvous.port, '127.0.0.1');
    await waitFor(() => rendezvous.counters.ignored === 3, 'the removed node ignored');
    expect(bob.got).toHaveLength(1);
    expect(rendezvous.counters.relayed).toBe(1);
  });
});
