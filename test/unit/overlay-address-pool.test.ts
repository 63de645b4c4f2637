import { describe, expect, it } from 'vitest';
import { buildClusterManagerConfig, clusterManagerOptions } from '../../cluster-manager/config.js';
import { parseAddressPlan } from '../../cluster-manager/network/address-plan.js';
import {
  addressPool,
  allocate,
  blockCidr,
  blockPool,
  capacity,
  describeRange,
  freeBlocks,
  PoolExhaustedError,
} from '../../cluster-manager/network/address-pool.js';
import {
  ipToNumber,
  numberToIp,
  parseCidr,
  parseOptions,
  parseRange,
  UsageError,
  unreachableFromPeers,
} from '../../shared/index.js';

const ips = (numbers: number[]) => numbers.map(numberToIp);

describe('overlay address pools', () => {
  it('cuts the default worker range into 12,288 /26 subnets, lowest first', () => {
    const pool = blockPool('worker subnet', parseRange('10.18.0.0-10.29.255.255'), 64);
    expect(capacity(pool)).toBe(12_288);
    const [first, second] = allocate(pool, new Set(), 2);
    expect(blockCidr(pool, first!)).toBe('10.18.0.0/26');
    expect(blockCidr(pool, second!)).toBe('10.18.0.64/26');
    expect(blockCidr(pool, pool.lastBlock)).toBe('10.29.255.192/26');
  });

  it('uses only /26 blocks aligned to 64 that lie wholly inside the range', () => {
    const pool = blockPool('worker subnet', parseRange('10.18.0.10-10.18.1.100'), 64);
    const all = freeBlocks(pool, new Set(), 100);
    expect(all.map((start) => blockCidr(pool, start))).toEqual([
      '10.18.0.64/26',
      '10.18.0.128/26',
      '10.18.0.192/26',
      '10.18.1.0/26',
    ]);
    expect(capacity(blockPool('worker subnet', parseRange('10.18.0.1-10.18.0.64'), 64))).toBe(0);
  });

  it('hands out single addresses without the first and last of the block', () => {
    const pool = addressPool('service address', parseCidr('10.30.0.0/16'));
    expect(capacity(pool)).toBe(65_534);
    expect(ips(allocate(pool, new Set(), 3))).toEqual(['10.30.0.1', '10.30.0.2', '10.30.0.3']);
    const small = addressPool('service address', parseCidr('10.30.0.0/30'));
    expect(ips(freeBlocks(small, new Set(), 10))).toEqual(['10.30.0.1', '10.30.0.2']);
  });

  it('never hands out a taken block, and reuses one once it is released', () => {
    const pool = blockPool('worker subnet', parseCidr('10.18.0.0/24'), 64);
    const used = new Set<number>();
    const taken: number[] = [];
    for (let i = 0; i < 4; i++) {
      const [start] = allocate(pool, used, 1);
      expect(used.has(start!)).toBe(false);
      used.add(start!);
      taken.push(start!);
    }
    expect(new Set(taken).size).toBe(4);
    for (const [i, a] of taken.entries())
      for (const b of taken.slice(i + 1)) expect(Math.abs(a - b)).toBeGreaterThanOrEqual(64);
    used.delete(ipToNumber('10.18.0.64'));
    expect(ips(allocate(pool, used, 1))).toEqual(['10.18.0.64']);
  });

  it('says clearly when a pool is exhausted, and how many are free', () => {
    const pool = addressPool('service address', parseCidr('10.30.0.0/29'));
    const used = new Set(allocate(pool, new Set(), 4));
    expect(() => allocate(pool, used, 3)).toThrow(PoolExhaustedError);
    expect(() => allocate(pool, used, 3)).toThrow(
      'the service address pool 10.30.0.0/29 is exhausted: 3 wanted, 2 free of 6',
    );
    expect(allocate(pool, used, 2)).toHaveLength(2);
  });
});

describe('the overlay flags', () => {
  const config = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
    buildClusterManagerConfig(parseOptions(clusterManagerOptions, argv, env));
  const ranges = ({ addressPlan }: ReturnType<typeof config>) => [
    describeRange(addressPlan.workerSubnets.range),
    describeRange(addressPlan.serviceAddresses.range),
  ];

  it('takes the defaults of CONTRACT.md and a range, a CIDR block or an env var', () => {
    expect(ranges(config([]))).toEqual(['10.18.0.0-10.29.255.255', '10.30.0.0/16']);
    const plan = parseAddressPlan('10.18.0.0/16', '10.30.0.0/16');
    expect(capacity(plan.workerSubnets)).toBe(1024);
    expect(capacity(plan.serviceAddresses)).toBe(65_534);
    expect(ranges(config([], { CM_SERVICE_SUBNET: '10.31.0.0/24' }))[1]).toBe('10.31.0.0/24');
    expect(ranges(config(['--worker-subnets', '10.20.0.0-10.20.3.255']))[0]).toBe('10.20.0.0/22');
  });

  it('refuses bad values, a range without room for a /26 and overlapping ranges with one line each', () => {
    const refusals: [string[], RegExp][] = [
      [['--worker-subnets', '10.18.0.0'], /^--worker-subnets: "10\.18\.0\.0" is not an address range/],
      [['--worker-subnets', '10.18.0.0-10.17.0.0'], /^--worker-subnets: .*ends before it starts/],
      [['--worker-subnets', '10.18.0.0/33'], /^--worker-subnets: .*not a CIDR block/],
      [['--worker-subnets', '10.18.0.0/27'], /^--worker-subnets: 10\.18\.0\.0\/27 holds no whole \/26/],
      [['--worker-subnets', '10.18.0.1-10.18.0.70'], /holds no whole \/26/],
      [['--service-subnet', '10.30.0.0-10.30.255.255'], /^--service-subnet: .*not a CIDR block/],
      [
        ['--service-subnet', '10.30.0.5/16'],
        /^--service-subnet: .*host bits set; did you mean 10\.30\.0\.0\/16\?/,
      ],
      [['--service-subnet', '10.30.0.0/31'], /^--service-subnet: 10\.30\.0\.0\/31 is too small/],
      [
        ['--service-subnet', '10.20.0.0/16'],
        /^--worker-subnets 10\.18\.0\.0-10\.29\.255\.255 and --service-subnet 10\.20\.0\.0\/16 overlap/,
      ],
      [['--service-subnet', 'nope'], /^--service-subnet: "nope" is not a CIDR block/],
    ];
    for (const [argv, message] of refusals) {
      let error: unknown;
      try {
        config(argv);
      } catch (caught) {
        error = caught;
      }
      expect(error, argv.join(' ')).toBeInstanceOf(UsageError);
      expect((error as Error).message, argv.join(' ')).toMatch(message);
      expect((error as Error).message).not.toContain('\n');
    }
  });
});

describe('overlay endpoints other machines can reach', () => {
  it.each([
    ['127.0.0.1', 'a loopback address'],
    ['127.1.2.3', 'a loopback address'],
    ['0.0.0.0', 'an unspecified address'],
    ['224.0.0.1', 'a multicast address'],
    ['239.255.255.250', 'a multicast address'],
    ['255.255.255.255', 'the broadcast address'],
    ['192.0.2.10', undefined],
    ['10.210.0.1', undefined],
    ['240.0.0.1', undefined],
    ['128.0.0.1', undefined],
  ])('%s: %s', (ip, reason) => {
    expect(unreachableFromPeers(ip)).toBe(reason);
  });
});
