import { describe, expect, it } from 'vitest';
import { FlowTable, FragmentTable } from '../../net-manager/routing/flow-table.js';
import {
  ipv4HeaderChecksum,
  PROTOCOL_ICMP,
  PROTOCOL_TCP,
  PROTOCOL_UDP,
  transportChecksum,
} from '../../net-manager/routing/packet.js';
import { RouteCache } from '../../net-manager/routing/route-cache.js';
import { RECHECK_SOURCE_AFTER_MS, SourceCheck } from '../../net-manager/routing/source-check.js';
import { type TranslateResult, Translator } from '../../net-manager/routing/translator.js';
import { ipToNumber, numberToIp } from '../../shared/ipv4.js';
import type { JobRouteTable, RouteTableInstance } from '../../shared/net.js';
import { buildPacket } from '../helpers/packets.js';

const ip = ipToNumber;

// --- fixtures ------------------------------------------------------------------------------------------

class FakeClock {
  time = 1_000_000;
  readonly now = () => this.time;
  advance(ms: number): void {
    this.time += ms;
  }
}

function instance(number: number, instanceIp: string, where?: [nodeId: string, namespaceIp: string]) {
  const entry: RouteTableInstance = { number, instanceIp };
  if (where) {
    const publicIp = where[0] === 'w1' ? '192.168.1.1' : `192.168.1.${where[0].slice(1)}`;
    entry.route = { nodeId: where[0], namespaceIp: where[1], publicIp, udpPort: 50103 };
  }
  return entry;
}

function table(jobId: string, serviceIp: string, instances: RouteTableInstance[]): JobRouteTable {
  return { kind: 'job', jobId, jobName: jobId, serviceIp, instances, ts: 0 };
}

// Worker w1 runs client A (10.18.0.2) and server C (10.18.0.3); w2 runs server B twice and D (10.18.0.68).
const jobA = table('a', '10.30.0.10', [instance(0, '10.30.0.11', ['w1', '10.18.0.2'])]);
const jobB = table('b', '10.30.0.20', [
  instance(0, '10.30.0.21', ['w2', '10.18.0.66']),
  instance(1, '10.30.0.22', ['w2', '10.18.0.67']),
]);
const jobC = table('c', '10.30.0.30', [instance(0, '10.30.0.31', ['w1', '10.18.0.3'])]);
const jobStopped = table('s', '10.30.0.40', [instance(0, '10.30.0.41')]);

function addresses(bytes: Buffer): [string, string] {
  return [numberToIp(bytes.readUInt32BE(12)), numberToIp(bytes.readUInt32BE(16))];
}

function expectChecksumsValid(bytes: Buffer): void {
  expect(bytes.readUInt16BE(10)).toBe(ipv4HeaderChecksum(bytes, 0));
  const at = 20 + (bytes[9] === PROTOCOL_TCP ? 16 : bytes[9] === PROTOCOL_UDP ? 6 : 2);
  expect(bytes.readUInt16BE(at)).toBe(transportChecksum(bytes, 0));
}

/** Copies the parts of the reused result worth comparing. */
function outcome(result: TranslateResult) {
  const { action, reason, peerIp, peerPort, queryIp } = result;
  return {
    action,
    ...(reason ? { reason } : {}),
    ...(action === 'send' ? { peer: `${numberToIp(peerIp)}:${peerPort}` } : {}),
    ...(queryIp ? { query: numberToIp(queryIp) } : {}),
  };
}

/** Two workers' translators with every table cached and the containers attached. */
function twoWorkers() {
  const clock = new FakeClock();
  const worker = (nodeId: string, attached: [string, string][]) => {
    const routes = new RouteCache({ localNodeId: nodeId, now: clock.now });
    for (const job of [jobA, jobB, jobC, jobStopped]) routes.apply(job);
    const translator = new Translator({ routes });
    for (const [namespaceIp, instanceIp] of attached) translator.attach(ip(namespaceIp), ip(instanceIp));
    return translator;
  };
  const w1 = worker('w1', [
    ['10.18.0.2', '10.30.0.11'],
    ['10.18.0.3', '10.30.0.31'],
  ]);
  const w2 = worker('w2', [
    ['10.18.0.66', '10.30.0.21'],
    ['10.18.0.67', '10.30.0.22'],
  ]);
  return { clock, w1, w2 };
}

// --- route cache ---------------------------------------------------------------------------------------

describe('net manager routing: route cache', () => {
  it('keeps time on the monotonic clock: the date set a day forward expires nothing', () => {
    const cache = new RouteCache({ localNodeId: 'w1' });
    const flows = new FlowTable();
    cache.apply(jobB);
    flows.add(PROTOCOL_TCP, ip('10.18.0.2'), 40_000, ip('10.30.0.20'), 80, ip('10.30.0.21'));
    const realNow = Date.now;
    try {
      Date.now = () => realNow() + 24 * 3600_000;
      expect(cache.expire()).toEqual([]);
      expect(flows.expire()).toBe(0);
      expect(cache.lookup(ip('10.30.0.20'))?.kind).toBe('service');
      expect(flows.lookupForward(PROTOCOL_TCP, ip('10.18.0.2'), 40_000, ip('10.30.0.20'), 80)).toBe(
        ip('10.30.0.21'),
      );
    } finally {
      Date.now = realNow;
    }
  });

  it('knows the endpoints of the workers its tables name, for as long as a table names them', () => {
    const cache = new RouteCache({ localNodeId: 'w1' });
    const w2 = ip('192.168.1.2');
    expect(cache.isPeer(w2, 50103)).toBe(false);
    cache.apply(jobB); // two instances on w2
    expect(cache.isPeer(w2, 50103)).toBe(true);
    expect(cache.isPeer(w2, 50104)).toBe(false);
    // One of B's instances moves to w3: w2 still holds the other.
    cache.apply(
      table('b', '10.30.0.20', [
        instance(0, '10.30.0.21', ['w2', '10.18.0.66']),
        instance(1, '10.30.0.22', ['w3', '10.18.0.130']),
      ]),
    );
    expect(cache.isPeer(w2, 50103)).toBe(true);
    expect(cache.isPeer(ip('192.168.1.3'), 50103)).toBe(true);
    cache.remove('b');
    expect(cache.isPeer(w2, 50103)).toBe(false);
    expect(cache.isPeer(ip('192.168.1.3'), 50103)).toBe(false);
  });

  it('indexes service and instance IPs, replaces a job on apply and forgets it on remove', () => {
    const cache = new RouteCache({ localNodeId: 'w1' });
    expect(cache.lookup(ip('10.30.0.20'))).toBeUndefined();
    cache.apply(jobB);
    const service = cache.lookup(ip('10.30.0.20'));
    expect(service).toMatchObject({ kind: 'service', job: { jobId: 'b', serviceIp: ip('10.30.0.20') } });
    const second = cache.lookup(ip('10.30.0.22'));
    expect(second?.kind).toBe('instance');
    if (second?.kind !== 'instance') throw new Error('not an instance');
    expect(second.instance.route).toEqual({
      nodeId: 'w2',
      local: false,
      namespaceIp: ip('10.18.0.67'),
      publicIp: ip('192.168.1.2'),
      udpPort: 50103,
      publicKey: null,
      candidates: [],
      endpointsKey: '192.168.1.2:50103',
    });

    // Instance 1 stopped and instance 2 appeared.
    cache.apply(
      table('b', '10.30.0.20', [instance(0, '10.30.0.21', ['w2', '10.18.0.66']), instance(1, '10.30.0.22')]),
    );
    const stopped = cache.lookup(ip('10.30.0.22'));
    expect(stopped?.kind === 'instance' && stopped.instance.route).toBeNull();
    cache.apply(table('b', '10.30.0.20', [instance(2, '10.30.0.23', ['w1', '10.18.0.5'])]));
    expect(cache.lookup(ip('10.30.0.21'))).toBeUndefined();
    expect(cache.lookup(ip('10.30.0.23'))?.kind).toBe('instance');

    expect(cache.snapshot()).toEqual([
      {
        jobId: 'b',
        jobName: 'b',
        serviceIp: '10.30.0.20',
        lastUsed: expect.any(Number),
        updatedAt: expect.any(Number),
        instances: [
          {
            number: 2,
            instanceIp: '10.30.0.23',
            route: {
              nodeId: 'w1',
              local: true,
              namespaceIp: '10.18.0.5',
              publicIp: '192.168.1.1',
              udpPort: 50103,
              publicKey: null,
              candidates: [],
            },
          },
        ],
      },
    ]);
    expect(cache.remove('b')).toBe(true);
    expect(cache.remove('b')).toBe(false);
    expect(cache.lookup(ip('10.30.0.20'))).toBeUndefined();
    expect(cache.lookup(ip('10.30.0.23'))).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it('keeps an address another job took over when the first job goes', () => {
    const cache = new RouteCache();
    cache.apply(table('old', '10.30.0.50', [instance(0, '10.30.0.51')]));
    cache.apply(table('new', '10.30.0.52', [instance(0, '10.30.0.51', ['w2', '10.18.0.70'])]));
    cache.remove('old');
    expect(cache.lookup(ip('10.30.0.51'))).toMatchObject({ kind: 'instance', job: { jobId: 'new' } });
  });

  it('answers missing and pending for a while, then unknown again; a table replaces them', () => {
    const clock = new FakeClock();
    const cache = new RouteCache({ now: clock.now, missingTtlMs: 3000, pendingTtlMs: 2000 });
    cache.markMissing(ip('10.30.9.9'));
    cache.markPending(ip('10.30.9.8'));
    expect(cache.lookup(ip('10.30.9.9'))?.kind).toBe('missing');
    expect(cache.lookup(ip('10.30.9.8'))?.kind).toBe('pending');
    clock.advance(2500);
    expect(cache.lookup(ip('10.30.9.9'))?.kind).toBe('missing');
    expect(cache.lookup(ip('10.30.9.8'))).toBeUndefined();
    clock.advance(600);
    expect(cache.lookup(ip('10.30.9.9'))).toBeUndefined();

    cache.markPending(ip('10.30.0.20'));
    cache.apply(jobB);
    expect(cache.lookup(ip('10.30.0.20'))?.kind).toBe('service');
    cache.markMissing(ip('10.30.0.20')); // a late answer does not hide a known address
    expect(cache.lookup(ip('10.30.0.20'))?.kind).toBe('service');
  });

  it('bounds negative entries, dropping the oldest', () => {
    const cache = new RouteCache({ maxUnresolved: 3 });
    for (let last = 1; last <= 4; last++) cache.markMissing(ip(`10.30.9.${last}`));
    expect(cache.lookup(ip('10.30.9.1'))).toBeUndefined();
    expect(cache.lookup(ip('10.30.9.4'))?.kind).toBe('missing');
  });

  it('chooses local instances first, round robin among equals, none when nothing runs', () => {
    const cache = new RouteCache({ localNodeId: 'w1' });
    const job = cache.apply(
      table('m', '10.30.0.60', [
        instance(0, '10.30.0.61', ['w2', '10.18.0.66']),
        instance(1, '10.30.0.62', ['w1', '10.18.0.4']),
        instance(2, '10.30.0.63', ['w3', '10.18.0.130']),
        instance(3, '10.30.0.64', ['w1', '10.18.0.5']),
        instance(4, '10.30.0.65'),
      ]),
    );
    const picks = () => Array.from({ length: 4 }, () => cache.chooseInstance(job)?.number);
    expect(picks()).toEqual([1, 3, 1, 3]);

    cache.setLocalNodeId('w9');
    expect(picks()).toEqual([0, 1, 2, 3]);

    const remoteOnly = cache.apply(
      table('m', '10.30.0.60', [
        instance(0, '10.30.0.61', ['w2', '10.18.0.66']),
        instance(2, '10.30.0.63', ['w3', '10.18.0.130']),
      ]),
    );
    cache.setLocalNodeId('w1');
    expect(Array.from({ length: 3 }, () => cache.chooseInstance(remoteOnly)?.number)).toEqual([0, 2, 0]);
    expect(cache.chooseInstance(cache.apply(jobStopped))).toBeNull();
  });

  it('expires jobs idle for longer than idleMs; lookups keep them alive; inUse lists recent ones', () => {
    const clock = new FakeClock();
    const cache = new RouteCache({ now: clock.now, idleMs: 10 * 60_000 });
    cache.apply(jobA);
    cache.apply(jobB);
    cache.markMissing(ip('10.30.9.9'));
    clock.advance(6 * 60_000);
    cache.lookup(ip('10.30.0.21')); // job b used
    expect(cache.inUse(60_000)).toEqual([ip('10.30.0.20')]);
    clock.advance(5 * 60_000);
    expect(cache.expire()).toEqual(['a']);
    expect(cache.lookup(ip('10.30.0.11'))).toBeUndefined();
    expect(cache.lookup(ip('10.30.9.9'))).toBeUndefined();
    // A pushed update keeps the idle clock: only packets count as use.
    cache.apply(jobB);
    clock.advance(5 * 60_000 + 1);
    expect(cache.expire()).toEqual(['b']);
    expect(cache.size).toBe(0);
  });
});

// --- flow table ----------------------------------------------------------------------------------------

describe('net manager routing: whose packets a worker may send (encrypted)', () => {
  function setup() {
    const clock = new FakeClock();
    const routes = new RouteCache({ localNodeId: 'w1', now: clock.now });
    const queries: string[] = [];
    const counters = { spoofedSource: 0, sourceRechecks: 0 };
    const check = new SourceCheck(routes, (address) => queries.push(numberToIp(address)), counters);
    return { clock, routes, queries, counters, check };
  }

  it('takes an instance from its own worker, waits while nothing is known, and drops a fresh disagreement', () => {
    const { clock, routes, queries, counters, check } = setup();
    expect(check.sentBy(ip('10.30.0.21'), 'w2', clock.time)).toBe('unknown');
    routes.apply(jobB);
    expect(check.sentBy(ip('10.30.0.21'), 'w2', clock.time)).toBe('yes');
    // w3 claims B's instance while the answer is fresh: spoofing, at once, without asking again.
    expect(check.sentBy(ip('10.30.0.21'), 'w3', clock.time)).toBe('no');
    // ... and a stopped instance (no route) or a service IP as a source is not any worker's.
    routes.apply(jobStopped);
    expect(check.sentBy(ip('10.30.0.41'), 'w2', clock.time)).toBe('no');
    expect(check.sentBy(ip('10.30.0.20'), 'w2', clock.time)).toBe('no');
    expect(counters).toEqual({ spoofedSource: 3, sourceRechecks: 0 });
    expect(queries).toEqual([]);
  });

  it('asks again when an old answer disagrees (a move, an address handed out again), and follows the new one', () => {
    const { clock, routes, queries, counters, check } = setup();
    routes.apply(jobB);
    clock.advance(RECHECK_SOURCE_AFTER_MS);
    // B#0 moved to w3: the cached answer is a second old, so it is checked, and the packet waits.
    expect(check.sentBy(ip('10.30.0.21'), 'w3', clock.time)).toBe('unknown');
    expect(check.checking(ip('10.30.0.21'))).toBe(true);
    expect(queries).toEqual(['10.30.0.21']);
    // More of its packets wait for the same answer: one query.
    expect(check.sentBy(ip('10.30.0.21'), 'w3', clock.time + 5)).toBe('unknown');
    expect(queries).toHaveLength(1);
    clock.advance(10);
    routes.apply(table('b', '10.30.0.20', [instance(0, '10.30.0.21', ['w3', '10.18.0.130'])]));
    expect(check.sentBy(ip('10.30.0.21'), 'w3', clock.time)).toBe('yes');
    expect(check.checking(ip('10.30.0.21'))).toBe(false);
    // A `missing` answer (the address was free then) is checked again the same way once it is old.
    routes.markMissing(ip('10.30.0.90'), clock.time);
    expect(check.sentBy(ip('10.30.0.90'), 'w2', clock.time)).toBe('no');
    clock.advance(RECHECK_SOURCE_AFTER_MS);
    routes.markMissing(ip('10.30.0.91'), clock.time - RECHECK_SOURCE_AFTER_MS);
    expect(check.sentBy(ip('10.30.0.91'), 'w2', clock.time)).toBe('unknown');
    routes.apply(table('n', '10.30.0.92', [instance(0, '10.30.0.91', ['w2', '10.18.0.70'])]));
    expect(check.sentBy(ip('10.30.0.91'), 'w2', clock.time)).toBe('yes');
    expect(counters).toEqual({ spoofedSource: 1, sourceRechecks: 2 });
  });

  it('drops what a newer answer still disagrees with, and asks again only after a while', () => {
    const { clock, routes, queries, counters, check } = setup();
    routes.apply(jobB);
    clock.advance(RECHECK_SOURCE_AFTER_MS);
    expect(check.sentBy(ip('10.30.0.21'), 'w3', clock.time)).toBe('unknown');
    clock.advance(10);
    routes.apply(jobB); // the cluster manager answers: still on w2
    expect(check.sentBy(ip('10.30.0.21'), 'w3', clock.time)).toBe('no');
    // A spoofer that keeps sending costs no query while the answer is fresh ...
    for (let i = 0; i < 100; i++) expect(check.sentBy(ip('10.30.0.21'), 'w3', clock.time + i)).toBe('no');
    expect(queries).toHaveLength(1);
    // ... and one per RECHECK_SOURCE_AFTER_MS after that.
    clock.advance(RECHECK_SOURCE_AFTER_MS);
    expect(check.sentBy(ip('10.30.0.21'), 'w3', clock.time)).toBe('unknown');
    expect(queries).toHaveLength(2);
    // An unanswered re-check expires; the packets that waited are the caller's to drop.
    check.expire(clock.time + 5000, 5000);
    expect(check.checking(ip('10.30.0.21'))).toBe(false);
    expect(counters).toEqual({ spoofedSource: 101, sourceRechecks: 2 });
  });
});

describe('net manager routing: flow table', () => {
  const nsA = ip('10.18.0.2');
  const svc = ip('10.30.0.20');
  const b0 = ip('10.30.0.21');
  const b1 = ip('10.30.0.22');

  it('keeps a flow on its instance and maps replies back to the service IP', () => {
    const clock = new FakeClock();
    const flows = new FlowTable({ now: clock.now });
    expect(flows.mayHaveFlows(nsA)).toBe(false);
    expect(flows.lookupForward(PROTOCOL_TCP, nsA, 40_000, svc, 80)).toBe(0);
    flows.add(PROTOCOL_TCP, nsA, 40_000, svc, 80, b1);
    flows.add(PROTOCOL_TCP, nsA, 40_001, svc, 80, b0);
    expect(flows.mayHaveFlows(nsA)).toBe(true);
    expect(flows.lookupForward(PROTOCOL_TCP, nsA, 40_000, svc, 80)).toBe(b1);
    expect(flows.lookupForward(PROTOCOL_TCP, nsA, 40_001, svc, 80)).toBe(b0);
    expect(flows.lookupForward(PROTOCOL_UDP, nsA, 40_000, svc, 80)).toBe(0);
    expect(flows.lookupReverse(PROTOCOL_TCP, b1, 80, nsA, 40_000)).toBe(svc);
    expect(flows.lookupReverse(PROTOCOL_TCP, b0, 80, nsA, 40_000)).toBe(0);
    expect(flows.lookupReverse(PROTOCOL_TCP, b1, 81, nsA, 40_000)).toBe(0);
    expect(flows.size).toBe(2);

    // A new choice for the same flow replaces the old one, reverse mapping included.
    flows.add(PROTOCOL_TCP, nsA, 40_000, svc, 80, b0);
    expect(flows.lookupForward(PROTOCOL_TCP, nsA, 40_000, svc, 80)).toBe(b0);
    expect(flows.lookupReverse(PROTOCOL_TCP, b1, 80, nsA, 40_000)).toBe(0);
    expect(flows.size).toBe(2);

    expect(flows.remove(PROTOCOL_TCP, nsA, 40_000, svc, 80)).toBe(true);
    expect(flows.remove(PROTOCOL_TCP, nsA, 40_000, svc, 80)).toBe(false);
    expect(flows.removeLocal(nsA)).toBe(1);
    expect(flows.size).toBe(0);
    expect(flows.mayHaveFlows(nsA)).toBe(false);
  });

  it('forgets idle flows: UDP/ICMP after 2 min, TCP after 10 min; use refreshes them', () => {
    const clock = new FakeClock();
    const flows = new FlowTable({ now: clock.now });
    flows.add(PROTOCOL_TCP, nsA, 1, svc, 80, b0);
    flows.add(PROTOCOL_UDP, nsA, 2, svc, 53, b0);
    flows.add(PROTOCOL_ICMP, nsA, 3, svc, 3, b0);
    clock.advance(90_000);
    expect(flows.lookupReverse(PROTOCOL_UDP, b0, 53, nsA, 2)).toBe(svc); // refreshed
    clock.advance(60_000);
    expect(flows.expire()).toBe(1); // the ICMP flow
    expect(flows.lookupForward(PROTOCOL_UDP, nsA, 2, svc, 53)).toBe(b0);
    clock.advance(121_000);
    expect(flows.lookupForward(PROTOCOL_UDP, nsA, 2, svc, 53)).toBe(0); // expired on lookup
    expect(flows.lookupForward(PROTOCOL_TCP, nsA, 1, svc, 80)).toBe(b0);
    clock.advance(10 * 60_000 + 1);
    expect(flows.expire()).toBe(1);
    expect(flows.size).toBe(0);
    expect(flows.counters.expired).toBe(3);
  });

  it('holds at most maxFlows, dropping the least recently used', () => {
    const clock = new FakeClock();
    const flows = new FlowTable({ now: clock.now, maxFlows: 3 });
    for (let port = 1; port <= 3; port++) {
      flows.add(PROTOCOL_UDP, nsA, port, svc, 53, b0);
      clock.advance(10);
    }
    flows.lookupForward(PROTOCOL_UDP, nsA, 1, svc, 53); // 2 is now the oldest
    flows.add(PROTOCOL_TCP, nsA, 4, svc, 80, b1);
    expect(flows.size).toBe(3);
    expect(flows.counters.evicted).toBe(1);
    expect(flows.lookupForward(PROTOCOL_UDP, nsA, 2, svc, 53)).toBe(0);
    expect(flows.lookupForward(PROTOCOL_UDP, nsA, 1, svc, 53)).toBe(b0);
    expect(flows.lookupForward(PROTOCOL_TCP, nsA, 4, svc, 80)).toBe(b1);
  });

  it('agrees with a plain Map model through random adds, lookups, removals and evictions', () => {
    const clock = new FakeClock();
    const flows = new FlowTable({ now: clock.now, maxFlows: 64 });
    const model = new Map<string, { instance: number; lastUsed: number }>();
    const key = (p: number, local: number, port: number, service: number, servicePort: number) =>
      `${p}/${local}/${port}/${service}/${servicePort}`;
    const pick = (n: number) => Math.floor(Math.random() * n);
    for (let step = 0; step < 10_000; step++) {
      clock.advance(1);
      const p = [PROTOCOL_TCP, PROTOCOL_UDP][pick(2)]!;
      const local = ip('10.18.0.2') + pick(3);
      const port = 1000 + pick(40);
      const service = ip('10.30.0.20') + pick(2);
      const servicePort = 80;
      const k = key(p, local, port, service, servicePort);
      const roll = pick(10);
      if (roll < 4) {
        const instanceIp = ip('10.30.1.0') + pick(200);
        for (const [other, value] of model) {
          // The table also drops a flow whose replies would look the same.
          const [op, ol, oport, , osp] = other.split('/').map(Number);
          if (
            op === p &&
            ol === local &&
            oport === port &&
            osp === servicePort &&
            value.instance === instanceIp
          ) {
            model.delete(other);
          }
        }
        model.delete(k);
        if (model.size >= 64) {
          let oldest: string | undefined;
          for (const [other, value] of model) {
            if (oldest === undefined || value.lastUsed < model.get(oldest)!.lastUsed) oldest = other;
          }
          model.delete(oldest!);
        }
        flows.add(p, local, port, service, servicePort, instanceIp);
        model.set(k, { instance: instanceIp, lastUsed: clock.time });
      } else if (roll < 8) {
        const expected = model.get(k);
        expect(flows.lookupForward(p, local, port, service, servicePort)).toBe(expected?.instance ?? 0);
        if (expected) {
          expected.lastUsed = clock.time;
          expect(flows.lookupReverse(p, expected.instance, servicePort, local, port)).toBe(service);
        }
      } else {
        expect(flows.remove(p, local, port, service, servicePort)).toBe(model.delete(k));
      }
      expect(flows.size).toBe(model.size);
    }
  });

  it('remembers a datagram for its later fragments, for a while', () => {
    const fragments = new FragmentTable({ ttlMs: 1000 });
    fragments.remember(nsA, svc, 7, PROTOCOL_UDP, b1, 0);
    expect(fragments.lookup(nsA, svc, 7, PROTOCOL_UDP, 500)).toBe(b1);
    expect(fragments.lookup(nsA, svc, 8, PROTOCOL_UDP, 500)).toBe(0);
    expect(fragments.lookup(nsA, svc, 7, PROTOCOL_TCP, 500)).toBe(0);
    expect(fragments.lookup(nsA, svc, 7, PROTOCOL_UDP, 1000)).toBe(0);
  });
});

// --- translator ----------------------------------------------------------------------------------------

describe('net manager routing: translator', () => {
  it('carries A -> service IP -> B on another worker, and B’s reply back as if from the service IP', () => {
    const { w1, w2 } = twoWorkers();
    const syn = buildPacket({ protocol: PROTOCOL_TCP, src: '10.18.0.2', dst: '10.30.0.20', srcPort: 40_000 });
    expect(outcome(w1.translateOutgoing(syn, 0, syn.length))).toEqual({
      action: 'send',
      peer: '192.168.1.2:50103',
    });
    const [src, dst] = addresses(syn);
    expect(src).toBe('10.30.0.11');
    expect(['10.18.0.66', '10.18.0.67']).toContain(dst);
    expectChecksumsValid(syn);

    expect(outcome(w2.translateArriving(syn, 0, syn.length))).toEqual({ action: 'deliver' });
    expect(addresses(syn)).toEqual(['10.30.0.11', dst]);

    const synAck = buildPacket({
      protocol: PROTOCOL_TCP,
      src: dst,
      dst: '10.30.0.11',
      srcPort: 80,
      dstPort: 40_000,
    });
    expect(outcome(w2.translateOutgoing(synAck, 0, synAck.length))).toEqual({
      action: 'send',
      peer: '192.168.1.1:50103',
    });
    expect(addresses(synAck)).toEqual([dst === '10.18.0.66' ? '10.30.0.21' : '10.30.0.22', '10.18.0.2']);
    expect(outcome(w1.translateArriving(synAck, 0, synAck.length))).toEqual({ action: 'deliver' });
    expect(addresses(synAck)).toEqual(['10.30.0.20', '10.18.0.2']);
    expectChecksumsValid(synAck);

    expect(w1.counters).toMatchObject({ sent: 1, delivered: 1 });
    expect(w2.counters).toMatchObject({ sent: 1, delivered: 1 });
  });

  it('keeps a flow on one instance and spreads new flows round robin', () => {
    const { w1 } = twoWorkers();
    const target = (srcPort: number) => {
      const bytes = buildPacket({ protocol: PROTOCOL_UDP, src: '10.18.0.2', dst: '10.30.0.20', srcPort });
      w1.translateOutgoing(bytes, 0, bytes.length);
      return addresses(bytes)[1];
    };
    const first = [target(1), target(2), target(3), target(4)];
    expect(new Set(first)).toEqual(new Set(['10.18.0.66', '10.18.0.67']));
    expect(first[0]).not.toBe(first[1]);
    expect([target(1), target(2), target(3), target(4)]).toEqual(first);
  });

  it('sends to an instance IP directly, and ICMP echo through a service IP comes back from it', () => {
    const { w1, w2 } = twoWorkers();
    const direct = buildPacket({ protocol: PROTOCOL_UDP, src: '10.18.0.2', dst: '10.30.0.22' });
    expect(outcome(w1.translateOutgoing(direct, 0, direct.length)).action).toBe('send');
    expect(addresses(direct)).toEqual(['10.30.0.11', '10.18.0.67']);

    const echo = buildPacket({
      protocol: PROTOCOL_ICMP,
      src: '10.18.0.2',
      dst: '10.30.0.20',
      identifier: 99,
    });
    w1.translateOutgoing(echo, 0, echo.length);
    const [, target] = addresses(echo);
    expectChecksumsValid(echo);
    const reply = buildPacket({
      protocol: PROTOCOL_ICMP,
      icmpType: 0,
      src: target,
      dst: '10.30.0.11',
      identifier: 99,
    });
    expect(outcome(w2.translateOutgoing(reply, 0, reply.length)).action).toBe('send');
    expect(outcome(w1.translateArriving(reply, 0, reply.length)).action).toBe('deliver');
    expect(addresses(reply)).toEqual(['10.30.0.20', '10.18.0.2']);
    expectChecksumsValid(reply);
  });

  it('brings a port unreachable for a service flow back to the sender with the service IP quoted', () => {
    const { w1, w2 } = twoWorkers();
    const datagram = buildPacket({
      protocol: PROTOCOL_UDP,
      src: '10.18.0.2',
      dst: '10.30.0.20',
      srcPort: 5000,
    });
    w1.translateOutgoing(datagram, 0, datagram.length);
    w2.translateArriving(datagram, 0, datagram.length);
    const [, target] = addresses(datagram);
    const unreachable = buildPacket({
      protocol: PROTOCOL_ICMP,
      icmpType: 3,
      src: target,
      dst: '10.30.0.11',
      payload: datagram,
    });
    expect(outcome(w2.translateOutgoing(unreachable, 0, unreachable.length)).action).toBe('send');
    expect(outcome(w1.translateArriving(unreachable, 0, unreachable.length)).action).toBe('deliver');
    expect(addresses(unreachable)).toEqual(['10.30.0.20', '10.18.0.2']);
    const quoted = unreachable.subarray(28);
    expect(addresses(Buffer.from(quoted))).toEqual(['10.18.0.2', '10.30.0.20']);
    expect(quoted.readUInt16BE(20)).toBe(5000);
    expectChecksumsValid(unreachable);
    expectChecksumsValid(Buffer.from(quoted));
  });

  it('loops same-worker traffic back, translated both ways (hairpin)', () => {
    const { w1 } = twoWorkers();
    const request = buildPacket({
      protocol: PROTOCOL_TCP,
      src: '10.18.0.2',
      dst: '10.30.0.30',
      srcPort: 41_000,
    });
    expect(outcome(w1.translateOutgoing(request, 0, request.length))).toEqual({ action: 'local' });
    expect(addresses(request)).toEqual(['10.30.0.11', '10.18.0.3']);
    expectChecksumsValid(request);

    const reply = buildPacket({
      protocol: PROTOCOL_TCP,
      src: '10.18.0.3',
      dst: '10.30.0.11',
      srcPort: 80,
      dstPort: 41_000,
    });
    expect(outcome(w1.translateOutgoing(reply, 0, reply.length))).toEqual({ action: 'local' });
    expect(addresses(reply)).toEqual(['10.30.0.30', '10.18.0.2']);
    expectChecksumsValid(reply);
    expect(w1.counters.local).toBe(2);
  });

  it('prefers an instance on the same worker for a service IP', () => {
    const clock = new FakeClock();
    const routes = new RouteCache({ localNodeId: 'w2', now: clock.now });
    routes.apply(
      table('mixed', '10.30.0.70', [
        instance(0, '10.30.0.71', ['w1', '10.18.0.9']),
        instance(1, '10.30.0.72', ['w2', '10.18.0.80']),
      ]),
    );
    const w2 = new Translator({ routes });
    w2.attach(ip('10.18.0.66'), ip('10.30.0.21'));
    w2.attach(ip('10.18.0.80'), ip('10.30.0.72'));
    for (let port = 1; port <= 5; port++) {
      const bytes = buildPacket({
        protocol: PROTOCOL_UDP,
        src: '10.18.0.66',
        dst: '10.30.0.70',
        srcPort: port,
      });
      expect(outcome(w2.translateOutgoing(bytes, 0, bytes.length)).action).toBe('local');
      expect(addresses(bytes)[1]).toBe('10.18.0.80');
    }
  });

  it('drops packets from an unknown source and names every other reason', () => {
    const { w1 } = twoWorkers();
    const stranger = buildPacket({ protocol: PROTOCOL_UDP, src: '10.18.0.99', dst: '10.30.0.20' });
    expect(outcome(w1.translateOutgoing(stranger, 0, stranger.length))).toEqual({
      action: 'drop',
      reason: 'unknown-source',
    });
    const stopped = buildPacket({ protocol: PROTOCOL_UDP, src: '10.18.0.2', dst: '10.30.0.41' });
    expect(outcome(w1.translateOutgoing(stopped, 0, stopped.length)).reason).toBe('no-route');
    const noneRunning = buildPacket({ protocol: PROTOCOL_UDP, src: '10.18.0.2', dst: '10.30.0.40' });
    expect(outcome(w1.translateOutgoing(noneRunning, 0, noneRunning.length)).reason).toBe('no-route');
    const notHere = buildPacket({ protocol: PROTOCOL_UDP, src: '10.30.0.21', dst: '10.18.0.66' });
    expect(outcome(w1.translateArriving(notHere, 0, notHere.length)).reason).toBe('not-local');
    const ipv6 = Buffer.alloc(40);
    ipv6[0] = 0x60;
    expect(outcome(w1.translateOutgoing(ipv6, 0, ipv6.length)).reason).toBe('not-ipv4');
    expect(outcome(w1.translateArriving(ipv6, 0, 10)).reason).toBe('not-ipv4');
    const gre = buildPacket({ protocol: PROTOCOL_UDP, src: '10.18.0.2', dst: '10.30.0.22' });
    gre[9] = 47;
    gre.writeUInt16BE(ipv4HeaderChecksum(gre, 0), 10);
    expect(outcome(w1.translateOutgoing(gre, 0, gre.length)).reason).toBe('unsupported-protocol');
    expect(w1.counters).toMatchObject({
      unknownSource: 1,
      noRoute: 2,
      notLocal: 1,
      notIpv4: 2,
      unsupportedProtocol: 1,
    });
  });

  it('asks once about an unknown destination, then waits, then learns the answer', () => {
    const { w1, clock } = twoWorkers();
    const send = () => {
      const bytes = buildPacket({ protocol: PROTOCOL_TCP, src: '10.18.0.2', dst: '10.30.0.90' });
      return outcome(w1.translateOutgoing(bytes, 0, bytes.length));
    };
    expect(send()).toEqual({ action: 'query', query: '10.30.0.90' });
    expect(send()).toEqual({ action: 'drop', reason: 'awaiting-route' });
    expect(send()).toEqual({ action: 'drop', reason: 'awaiting-route' });
    w1.routes.markMissing(ip('10.30.0.90'));
    expect(send()).toEqual({ action: 'drop', reason: 'unknown-destination' });
    clock.advance(3001);
    expect(send()).toEqual({ action: 'query', query: '10.30.0.90' });
    w1.routes.apply(table('late', '10.30.0.90', [instance(0, '10.30.0.91', ['w2', '10.18.0.68'])]));
    expect(send()).toEqual({ action: 'send', peer: '192.168.1.2:50103' });
    expect(w1.counters.queries).toBe(2);
  });

  it('asks about an arriving packet’s unknown source ahead of the reply', () => {
    const { w1 } = twoWorkers();
    const fromStranger = buildPacket({ protocol: PROTOCOL_TCP, src: '10.30.0.99', dst: '10.18.0.2' });
    expect(outcome(w1.translateArriving(fromStranger, 0, fromStranger.length))).toEqual({
      action: 'deliver',
      query: '10.30.0.99',
    });
    expect(outcome(w1.translateArriving(fromStranger, 0, fromStranger.length))).toEqual({
      action: 'deliver',
    });
  });

  it('re-chooses when the instance a flow went to stopped, and forgets flows of a detached container', () => {
    const { w1 } = twoWorkers();
    const send = () => {
      const bytes = buildPacket({ protocol: PROTOCOL_UDP, src: '10.18.0.2', dst: '10.30.0.20', srcPort: 7 });
      w1.translateOutgoing(bytes, 0, bytes.length);
      return addresses(bytes)[1];
    };
    const first = send();
    const stoppedIndex = first === '10.18.0.66' ? 0 : 1;
    w1.routes.apply(
      table(
        'b',
        '10.30.0.20',
        jobB.instances.map((entry, index) =>
          index === stoppedIndex ? { ...entry, route: undefined } : entry,
        ),
      ),
    );
    const second = send();
    expect(second).not.toBe(first);
    expect(send()).toBe(second);
    expect(w1.flows.size).toBe(1);
    expect(w1.detach(ip('10.18.0.2'))).toBe(true);
    expect(w1.flows.size).toBe(0);
    expect(w1.detach(ip('10.18.0.2'))).toBe(false);
  });

  it('sends every fragment of a datagram to the same instance and maps reply fragments back', () => {
    const { w1, w2 } = twoWorkers();
    const first = buildPacket({
      protocol: PROTOCOL_UDP,
      src: '10.18.0.2',
      dst: '10.30.0.20',
      srcPort: 6000,
      dstPort: 80,
      ipId: 77,
      fragment: [true, 0],
    });
    const rest = buildPacket({
      protocol: PROTOCOL_UDP,
      src: '10.18.0.2',
      dst: '10.30.0.20',
      ipId: 77,
      fragment: [false, 3],
    });
    w1.translateOutgoing(first, 0, first.length);
    expect(outcome(w1.translateOutgoing(rest, 0, rest.length)).action).toBe('send');
    expect(addresses(rest)).toEqual(addresses(first));
    const orphan = buildPacket({
      protocol: PROTOCOL_UDP,
      src: '10.18.0.2',
      dst: '10.30.0.20',
      ipId: 78,
      fragment: [false, 3],
    });
    expect(outcome(w1.translateOutgoing(orphan, 0, orphan.length)).reason).toBe('fragment-no-flow');

    const [, target] = addresses(first);
    const replyFirst = buildPacket({
      protocol: PROTOCOL_UDP,
      src: target,
      dst: '10.30.0.11',
      srcPort: 80,
      dstPort: 6000,
      ipId: 5,
      fragment: [true, 0],
    });
    const replyRest = buildPacket({
      protocol: PROTOCOL_UDP,
      src: target,
      dst: '10.30.0.11',
      ipId: 5,
      fragment: [false, 3],
    });
    for (const bytes of [replyFirst, replyRest]) {
      w2.translateOutgoing(bytes, 0, bytes.length);
      expect(outcome(w1.translateArriving(bytes, 0, bytes.length)).action).toBe('deliver');
      expect(addresses(bytes)).toEqual(['10.30.0.20', '10.18.0.2']);
      expect(bytes.readUInt16BE(10)).toBe(ipv4HeaderChecksum(bytes, 0));
    }
  });

  it('never throws, whatever the bytes', () => {
    const { w1, w2 } = twoWorkers();
    const buffer = Buffer.alloc(2048 * 4);
    const valid = [
      buildPacket({ protocol: PROTOCOL_TCP, src: '10.18.0.2', dst: '10.30.0.20' }),
      buildPacket({
        protocol: PROTOCOL_ICMP,
        icmpType: 3,
        src: '10.18.0.66',
        dst: '10.30.0.11',
        payload: Buffer.alloc(40),
      }),
      buildPacket({ protocol: PROTOCOL_UDP, src: '10.30.0.21', dst: '10.18.0.2', srcPort: 80 }),
    ];
    for (let round = 0; round < 20_000; round++) {
      const offset = 2048 * Math.floor(Math.random() * 4);
      let length: number;
      if (round % 2 === 0) {
        const source = valid[round % 3]!;
        source.copy(buffer, offset);
        buffer[offset + Math.floor(Math.random() * source.length)] = Math.floor(Math.random() * 256);
        length = Math.floor(Math.random() * (source.length + 4));
      } else {
        length = Math.floor(Math.random() * 200);
        for (let i = 0; i < length; i++) buffer[offset + i] = Math.floor(Math.random() * 256);
        buffer[offset] = 0x45;
      }
      const translate = round % 4 < 2 ? w1.translateOutgoing : w2.translateArriving;
      const result = translate.call(round % 4 < 2 ? w1 : w2, buffer, offset, length);
      expect(['send', 'local', 'deliver', 'query', 'drop']).toContain(result.action);
    }
    expect(outcome(w1.translateOutgoing(buffer, buffer.length - 10, 100))).toEqual({
      action: 'drop',
      reason: 'truncated',
    });
  });

  it('measures translateOutgoing per packet (printed, not asserted)', () => {
    const { w1 } = twoWorkers();
    const batchSize = 512;
    const template = Buffer.alloc(batchSize * 2048);
    const cases: [string, string][] = [
      ['instance IP', '10.30.0.22'],
      ['service IP (sticky flows)', '10.30.0.20'],
    ];
    for (const [label, destination] of cases) {
      for (let i = 0; i < batchSize; i++) {
        const bytes = buildPacket({
          protocol: PROTOCOL_TCP,
          src: '10.18.0.2',
          dst: destination,
          srcPort: 30_000 + (i % 64),
        });
        bytes.copy(template, i * 2048);
      }
      const batch = Buffer.alloc(template.length);
      let elapsed = 0n;
      let packets = 0;
      for (let round = 0; round < 400; round++) {
        batch.set(template);
        const started = process.hrtime.bigint();
        for (let i = 0; i < batchSize; i++) w1.translateOutgoing(batch, i * 2048, 1500);
        if (round >= 100) {
          elapsed += process.hrtime.bigint() - started;
          packets += batchSize;
        }
      }
      expect(w1.counters.sent).toBeGreaterThan(0);
      console.log(`translateOutgoing, TCP to ${label}: ${(Number(elapsed) / packets).toFixed(1)} ns/packet`);
    }
  });
});

// --- what the fast path is told ----------------------------------------------------------------------------

describe('net manager routing: what the fast path caches and forgets', () => {
  it('names exactly the addresses whose answer a new table changes', () => {
    const cache = new RouteCache({ localNodeId: 'w1' });
    const changed: string[] = [];
    cache.onAddressChanged = (address) => changed.push(numberToIp(address));
    cache.apply(jobB); // new: nothing was decided from it yet
    cache.apply(jobB); // the same again (a refresh)
    expect(changed).toEqual([]);
    // Instance 1 moves to w3: only its address changed; the service IP keeps its flows (on their instances).
    const moved = table('b', '10.30.0.20', [
      instance(0, '10.30.0.21', ['w2', '10.18.0.66']),
      instance(1, '10.30.0.22', ['w3', '10.18.0.130']),
    ]);
    cache.apply(moved);
    expect(changed).toEqual(['10.30.0.22']);
    // A new key for w2, instance 1 stopped, a new instance 2.
    changed.length = 0;
    cache.apply(
      table('b', '10.30.0.20', [
        {
          ...instance(0, '10.30.0.21', ['w2', '10.18.0.66']),
          route: { ...moved.instances[0]!.route!, publicKey: 'k' },
        },
        instance(1, '10.30.0.22'),
        instance(2, '10.30.0.23', ['w2', '10.18.0.69']),
      ]),
    );
    // (the new instance's address had nothing decided from it yet)
    expect(changed.sort()).toEqual(['10.30.0.21', '10.30.0.22']);
    // Deleted: every address of it.
    changed.length = 0;
    cache.remove('b');
    expect(changed.sort()).toEqual(['10.30.0.20', '10.30.0.21', '10.30.0.22', '10.30.0.23']);
    // Which worker is this one: every route's `local` may have changed.
    cache.apply(jobA);
    changed.length = 0;
    cache.setLocalNodeId('w2');
    expect(changed.sort()).toEqual(['10.30.0.10', '10.30.0.11']);
  });

  it('tells of every service flow added and forgotten, with the instance it went to', () => {
    const clock = new FakeClock();
    const flows = new FlowTable({ now: clock.now, otherIdleMs: 1000 });
    const told: string[] = [];
    flows.onFlowChanged = (protocol, localIp, localPort, serviceIp, servicePort, instanceIp) =>
      told.push(
        `${protocol} ${numberToIp(localIp)}:${localPort} ${numberToIp(serviceIp)}:${servicePort} ${numberToIp(instanceIp)}`,
      );
    flows.add(PROTOCOL_UDP, ip('10.18.0.2'), 5000, ip('10.30.0.20'), 53, ip('10.30.0.21'));
    flows.add(PROTOCOL_UDP, ip('10.18.0.2'), 5000, ip('10.30.0.20'), 53, ip('10.30.0.22')); // chosen again
    expect(told).toEqual([
      '17 10.18.0.2:5000 10.30.0.20:53 10.30.0.21',
      '17 10.18.0.2:5000 10.30.0.20:53 10.30.0.21',
      '17 10.18.0.2:5000 10.30.0.20:53 10.30.0.22',
    ]);
    told.length = 0;
    clock.advance(2000);
    flows.expire();
    expect(told).toEqual(['17 10.18.0.2:5000 10.30.0.20:53 10.30.0.22']);
    flows.add(PROTOCOL_TCP, ip('10.18.0.3'), 6000, ip('10.30.0.20'), 80, ip('10.30.0.21'));
    told.length = 0;
    flows.removeLocal(ip('10.18.0.3'));
    expect(told).toEqual(['6 10.18.0.3:6000 10.30.0.20:80 10.30.0.21']);
  });

  it('describes each decision for the fast path, and marks what it must never take', () => {
    const { w1, w2 } = twoWorkers();
    const attached: string[] = [];
    w1.onAttachmentChanged = (address) => attached.push(numberToIp(address));
    const udp = buildPacket({
      protocol: PROTOCOL_UDP,
      src: '10.18.0.2',
      dst: '10.30.0.20',
      srcPort: 5000,
      dstPort: 53,
    });
    const sent = w1.translateOutgoing(udp, 0, udp.length);
    const target = numberToIp(sent.flow.target);
    expect(['10.30.0.21', '10.30.0.22']).toContain(target);
    expect({ ...sent.flow, target: 0 }).toEqual({
      cacheable: true,
      protocol: PROTOCOL_UDP,
      src: ip('10.18.0.2'),
      srcPort: 5000,
      dst: ip('10.30.0.20'),
      dstPort: 53,
      newSrc: ip('10.30.0.11'),
      newDst: udp.readUInt32BE(16),
      target: 0,
      service: 0,
    });
    // The reply, arriving: its source becomes the service IP.
    const reply = buildPacket({
      protocol: PROTOCOL_UDP,
      src: target,
      dst: '10.18.0.2',
      srcPort: 53,
      dstPort: 5000,
    });
    const delivered = w1.translateArriving(reply, 0, reply.length);
    expect(delivered.action).toBe('deliver');
    expect(delivered.flow).toMatchObject({
      cacheable: true,
      src: ip(target),
      newSrc: ip('10.30.0.20'),
      newDst: ip('10.18.0.2'),
      service: ip('10.30.0.20'),
    });
    // To an instance IP: the instance is the target.
    const direct = buildPacket({ protocol: PROTOCOL_TCP, src: '10.18.0.2', dst: '10.30.0.31' });
    expect(w1.translateOutgoing(direct, 0, direct.length).flow).toMatchObject({
      cacheable: true,
      target: ip('10.30.0.31'),
    });
    // Never cached: fragments, ICMP other than echo, bytes past the total length, a source not known yet.
    const fragment = buildPacket({
      protocol: PROTOCOL_UDP,
      src: '10.18.0.2',
      dst: '10.30.0.31',
      fragment: [true, 0],
    });
    expect(w1.translateOutgoing(fragment, 0, fragment.length).flow.cacheable).toBe(false);
    const unreachable = buildPacket({
      protocol: PROTOCOL_ICMP,
      icmpType: 3,
      src: '10.18.0.2',
      dst: '10.30.0.31',
    });
    expect(w1.translateOutgoing(unreachable, 0, unreachable.length).flow.cacheable).toBe(false);
    const echo = buildPacket({ protocol: PROTOCOL_ICMP, src: '10.18.0.2', dst: '10.30.0.31' });
    expect(w1.translateOutgoing(echo, 0, echo.length).flow.cacheable).toBe(true);
    const padded = Buffer.concat([
      buildPacket({ protocol: PROTOCOL_UDP, src: '10.18.0.2', dst: '10.30.0.31' }),
      Buffer.alloc(4),
    ]);
    expect(w1.translateOutgoing(padded, 0, padded.length).flow.cacheable).toBe(false);
    const stranger = buildPacket({ protocol: PROTOCOL_UDP, src: '10.30.0.99', dst: '10.18.0.66' });
    const fromStranger = w2.translateArriving(stranger, 0, stranger.length);
    expect(fromStranger.action).toBe('deliver');
    expect(fromStranger.flow.cacheable).toBe(false);
    // Attachments: a namespace IP given to another instance, or detached.
    w1.attach(ip('10.18.0.2'), ip('10.30.0.11')); // the same again: nothing
    w1.attach(ip('10.18.0.2'), ip('10.30.0.12'));
    w1.detach(ip('10.18.0.3'));
    expect(attached).toEqual(['10.18.0.2', '10.18.0.3']);
  });
});
