import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  LAST_WILL_GRACE_MS,
  NodeLiveness,
  REGISTRATION_GRACE_MS,
} from '../../cluster-manager/liveness/node-liveness.js';
import { StallClock } from '../../cluster-manager/liveness/stall-clock.js';
import { SqliteStore, type Store } from '../../cluster-manager/store/index.js';
import { NodeInfoSchema } from '../../shared/index.js';
import { TestNode } from '../helpers/test-node.js';

const TIMEOUT_MS = 6000;
const TELEMETRY_MS = 2000;

/**
 * Liveness on a wall clock the test moves: `run(ms)` lets time pass as a responsive event loop sees it (the
 * sweep every 100 ms), with every talking node sending telemetry every 2 s; `stall(ms)` moves the clock with no
 * look at it in between, as a blocked event loop does.
 */
describe('node liveness', () => {
  let dir: string;
  let store: Store;
  let wall: number;
  let liveness: NodeLiveness;
  const offline: string[] = [];
  const holds: boolean[] = [];
  let talking: Set<string>;

  const nodeIds = (count: number) => Array.from({ length: count }, (_, i) => `node-${i}`);

  let lagMs = 0;

  function start(count: number): void {
    for (const id of nodeIds(count)) {
      store.nodes.upsert({
        id,
        name: id,
        secretHash: 'x',
        info: NodeInfoSchema.parse(TestNode.info(id)),
        address: null,
        status: 'offline',
        registeredAt: 0,
        lastSeen: null,
      });
    }
    liveness = new NodeLiveness(
      store,
      { timeoutMs: TIMEOUT_MS, wallClock: () => wall, controlLagMs: () => lagMs },
      {
        onOnline: () => {},
        onOffline: (nodeId) => offline.push(nodeId),
        onFailoverPaused: (paused) => holds.push(paused),
      },
      pino({ level: 'silent' }),
    );
    talking = new Set(nodeIds(count));
    for (const id of talking) liveness.seen(id);
  }

  /** `count` nodes online in the store, then a cluster manager that starts on it (a restart). */
  function restartWithOnline(count: number): void {
    start(count);
    for (const id of nodeIds(count)) store.nodes.setStatus(id, 'online');
    offline.length = 0;
    liveness = new NodeLiveness(
      store,
      { timeoutMs: TIMEOUT_MS, wallClock: () => wall },
      { onOnline: () => {}, onOffline: (nodeId) => offline.push(nodeId) },
      pino({ level: 'silent' }),
    );
  }

  function run(ms: number): void {
    for (let elapsed = 0; elapsed < ms; elapsed += 100) {
      wall += 100;
      if (wall % TELEMETRY_MS === 0) for (const id of talking) liveness.seen(id);
      liveness.sweep();
    }
  }

  const events = (type: string) => store.events.recent(1000).filter((event) => event.type === type);

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'edge-liveness-'));
    store = SqliteStore.open(dir);
    wall = 1_000_000;
    offline.length = 0;
    holds.length = 0;
    lagMs = 0;
  });
  afterEach(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('takes a node that falls silent offline after the timeout, and only that one', () => {
    start(3);
    talking.delete('node-1');
    run(TIMEOUT_MS - 500);
    expect(offline).toEqual([]);
    run(1500);
    expect(offline).toEqual(['node-1']);
    expect(liveness.isOnline('node-0')).toBe(true);
    expect(events('node.offline')[0]!.message).toMatch(/node node-1 offline: no telemetry for \d+ ms/);
  });

  it('gives a node that just registered REGISTRATION_GRACE_MS to be heard over MQTT, then the usual timeout', () => {
    start(3);
    talking.delete('node-2');
    liveness.registered('node-2');
    run(REGISTRATION_GRACE_MS - 1000);
    expect(offline).toEqual([]);
    run(2000);
    expect(offline).toEqual(['node-2']);
    // Heard once after registering, the credit is gone: silence counts from then.
    liveness.registered('node-2');
    liveness.seen('node-2');
    run(TIMEOUT_MS + 1000);
    expect(offline).toEqual(['node-2', 'node-2']);
  });

  it('adds the control lag (its own broker and client behind) to every allowance', () => {
    start(3);
    talking.delete('node-1');
    lagMs = 5000;
    run(TIMEOUT_MS + 4000);
    expect(offline).toEqual([]);
    run(2000);
    expect(offline).toEqual(['node-1']);
    expect(events('node.offline')[0]!.message).toMatch(/no telemetry for 1[12]\d{3} ms/);
  });

  it('does not count a stall of its own event loop as silence (8 s blocked, then messages read)', () => {
    start(3);
    run(1000);
    wall += 8000; // blocked: no timer ran, no message was read
    liveness.sweep(); // the first sweep after the stall runs before the queued messages are read
    expect(offline).toEqual([]);
    run(TIMEOUT_MS - 1000);
    expect(offline).toEqual([]);
    expect(liveness.clock.totalStalledMs).toBeGreaterThanOrEqual(7900);
    // A node that really stops talking after the stall still goes, one timeout later.
    talking.delete('node-2');
    run(TIMEOUT_MS + 1000);
    expect(offline).toEqual(['node-2']);
  });

  it('pauses failover while most of the fleet is quiet at once, says so, and resumes when it is back', () => {
    start(10);
    const quiet = nodeIds(6);
    for (const id of quiet) talking.delete(id);
    run(3 * TIMEOUT_MS);
    // They are offline, as the cluster manager sees them, but nothing may fail over meanwhile.
    expect(offline.sort()).toEqual(quiet);
    expect(liveness.failoverPaused).toBe(true);
    expect(holds).toEqual([true]);
    expect(events('failover.paused')[0]!.message).toMatch(/^6 of 10 online nodes went quiet at once/);
    for (const id of quiet) talking.add(id);
    run(TELEMETRY_MS + 200);
    expect(quiet.every((id) => liveness.isOnline(id))).toBe(true);
    expect(liveness.failoverPaused).toBe(false);
    expect(holds).toEqual([true, false]);
    expect(events('failover.resumed')[0]!.message).toMatch(/0 of the 6 nodes that went quiet are still away/);
    // One node alone going silent afterwards is judged as usual, with failover on.
    offline.length = 0;
    talking.delete('node-9');
    run(TIMEOUT_MS + 1000);
    expect(offline).toEqual(['node-9']);
    expect(liveness.failoverPaused).toBe(false);
  });

  it('resumes failover when most of those that went quiet are back, for the few still away', () => {
    start(10);
    for (const id of nodeIds(6)) talking.delete(id);
    run(2 * TIMEOUT_MS);
    expect(liveness.failoverPaused).toBe(true);
    for (const id of nodeIds(4)) talking.add(id);
    run(TELEMETRY_MS + 200);
    expect(liveness.failoverPaused).toBe(false);
    expect(liveness.isOnline('node-4')).toBe(false);
  });

  it('judges a few silent nodes one by one, whatever their share (2 of 3)', () => {
    start(3);
    talking.delete('node-0');
    talking.delete('node-1');
    run(TIMEOUT_MS + 1000);
    expect(offline.sort()).toEqual(['node-0', 'node-1']);
    expect(liveness.failoverPaused).toBe(false);
  });

  it('takes a node gone by last will offline after the grace, and pauses failover on a storm of wills', () => {
    start(10);
    talking.delete('node-3');
    liveness.lastWill('node-3');
    run(LAST_WILL_GRACE_MS + 200);
    expect(offline).toEqual(['node-3']);
    for (const id of ['node-4', 'node-5', 'node-6', 'node-7', 'node-8', 'node-9']) {
      talking.delete(id);
      liveness.lastWill(id);
    }
    run(LAST_WILL_GRACE_MS + 200);
    expect(offline).toHaveLength(7);
    expect(liveness.failoverPaused).toBe(true);
  });

  it('takes no node offline while its own broker link is down, and gives all the reconnect grace after', () => {
    start(3);
    liveness.brokerDisconnected();
    for (const id of nodeIds(3)) talking.delete(id);
    run(3 * TIMEOUT_MS);
    expect(offline).toEqual([]);
    for (const id of nodeIds(2)) talking.add(id);
    liveness.brokerConnected();
    // node-2 does not come back: it has the whole grace, not just the timeout, then goes.
    run(REGISTRATION_GRACE_MS - 1000);
    expect(offline).toEqual([]);
    run(2000);
    expect(offline).toEqual(['node-2']);
  });

  it('gives the nodes online before a restart of the cluster manager the reconnect grace', () => {
    restartWithOnline(3);
    talking.delete('node-0');
    run(REGISTRATION_GRACE_MS - 1000);
    expect(offline).toEqual([]);
    run(2000);
    expect(offline).toEqual(['node-0']);
  });

  it('believes no last will while the fleet reconnects after a restart, only silence for the timeout', () => {
    restartWithOnline(3);
    run(TELEMETRY_MS);
    // Takeover wills of nodes that reconnected, one with its next message far beyond the will grace.
    liveness.lastWill('node-0');
    talking.delete('node-1');
    liveness.lastWill('node-1');
    run(TELEMETRY_MS);
    expect(offline).toEqual([]);
    // node-1 stays silent: the timeout, not the will, takes it offline.
    run(TIMEOUT_MS);
    expect(offline).toEqual(['node-1']);
    // Once the grace is over, a will counts at once again.
    run(REGISTRATION_GRACE_MS);
    talking.delete('node-2');
    liveness.lastWill('node-2');
    run(LAST_WILL_GRACE_MS + 200);
    expect(offline).toEqual(['node-1', 'node-2']);
  });

  it('keeps the quick last will for a node that registered alone, and lets a will wait out the control lag', () => {
    start(4);
    liveness.registered('node-0');
    run(TELEMETRY_MS);
    talking.delete('node-0');
    liveness.lastWill('node-0');
    run(LAST_WILL_GRACE_MS + 200);
    expect(offline).toEqual(['node-0']);
    // node-2 is heard right after its will (a link that came straight back): it stays.
    liveness.lastWill('node-2');
    liveness.seen('node-2');
    run(LAST_WILL_GRACE_MS + 200);
    expect(offline).toEqual(['node-0']);
    talking.delete('node-2');
    liveness.lastWill('node-2');
    run(LAST_WILL_GRACE_MS + 200);
    expect(offline).toEqual(['node-0', 'node-2']);
    // With the control side 3 s behind, a will waits 3 s more: node-1's next message is in that backlog.
    lagMs = 3000;
    talking.delete('node-1');
    liveness.lastWill('node-1');
    run(LAST_WILL_GRACE_MS + 2000);
    expect(offline).toEqual(['node-0', 'node-2']);
    run(1500);
    expect(offline).toEqual(['node-0', 'node-2', 'node-1']);
    lagMs = 0;
  });
});

describe('the stall clock', () => {
  it('adds up gaps longer than two ticks, less one tick each, and nothing else', () => {
    let wall = 0;
    const clock = new StallClock(100, () => wall);
    for (let i = 0; i < 10; i++) {
      wall += 150;
      clock.now();
    }
    expect(clock.totalStalledMs).toBe(0);
    wall += 5000;
    expect(clock.now()).toBe(wall - 4900);
    expect(clock.totalStalledMs).toBe(4900);
  });
});
