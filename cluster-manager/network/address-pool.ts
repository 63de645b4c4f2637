import { type AddressRange, numberToIp } from '../../shared/index.js';

/**
 * A pool of equal, aligned blocks inside an address range: `/26` worker subnets (blocks of 64) or single
 * addresses (blocks of 1). Pure: what is taken lives in SQLite and is passed in, so a pool has no state to
 * lose or to get out of step with the database.
 */
export interface AddressPool {
  /** What the pool is for, in messages: "worker subnet", "service address". */
  readonly name: string;
  /** The range as configured, for messages. */
  readonly range: AddressRange;
  readonly blockSize: number;
  /** The start of the first and of the last block that lie wholly inside the range. */
  readonly firstBlock: number;
  readonly lastBlock: number;
}

export class PoolExhaustedError extends Error {
  override name = 'PoolExhaustedError';
  constructor(
    readonly pool: AddressPool,
    readonly wanted: number,
    readonly free: number,
  ) {
    super(
      `the ${pool.name} pool ${describeRange(pool.range)} is exhausted: ${wanted} wanted, ${free} free of ${capacity(pool)}`,
    );
  }
}

/** Blocks of `blockSize` (a power of two) aligned to their size, wholly inside `range`. */
export function blockPool(name: string, range: AddressRange, blockSize: number): AddressPool {
  const firstBlock = Math.ceil(range.first / blockSize) * blockSize;
  const lastBlock = Math.floor((range.last + 1) / blockSize) * blockSize - blockSize;
  return { name, range, blockSize, firstBlock, lastBlock };
}

/** Single addresses of `range` without its first and last (a block's network and broadcast address). */
export function addressPool(name: string, range: AddressRange): AddressPool {
  return { name, range, blockSize: 1, firstBlock: range.first + 1, lastBlock: range.last - 1 };
}

/** How many blocks the pool holds. */
export function capacity(pool: AddressPool): number {
  if (pool.lastBlock < pool.firstBlock) return 0;
  return (pool.lastBlock - pool.firstBlock) / pool.blockSize + 1;
}

/** Whether `start` is the start of one of the pool's blocks. */
export function inPool(pool: AddressPool, start: number): boolean {
  return (
    start >= pool.firstBlock && start <= pool.lastBlock && (start - pool.firstBlock) % pool.blockSize === 0
  );
}

/** Up to `limit` free blocks, lowest first: a released block is the next one handed out. */
export function freeBlocks(pool: AddressPool, used: ReadonlySet<number>, limit: number): number[] {
  const free: number[] = [];
  for (let start = pool.firstBlock; start <= pool.lastBlock && free.length < limit; start += pool.blockSize) {
    if (!used.has(start)) free.push(start);
  }
  return free;
}

/** Exactly `count` free blocks, lowest first, or a PoolExhaustedError that says how many are free. */
export function allocate(pool: AddressPool, used: ReadonlySet<number>, count: number): number[] {
  const free = freeBlocks(pool, used, count);
  if (free.length < count) {
    const inside = [...used].filter((start) => inPool(pool, start)).length;
    throw new PoolExhaustedError(pool, count, capacity(pool) - inside);
  }
  return free;
}

/** `10.18.0.64/26` for a block start of a pool of 64-address blocks. */
export function blockCidr(pool: AddressPool, start: number): string {
  return `${numberToIp(start)}/${32 - Math.log2(pool.blockSize)}`;
}

export function describeRange(range: AddressRange): string {
  const size = range.last - range.first + 1;
  const prefix = 32 - Math.log2(size);
  if (Number.isInteger(prefix) && range.first % size === 0) return `${numberToIp(range.first)}/${prefix}`;
  return `${numberToIp(range.first)}-${numberToIp(range.last)}`;
}
