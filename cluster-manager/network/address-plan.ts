import {
  type AddressRange,
  ipToNumber,
  numberToIp,
  parseCidr,
  parseRange,
  rangesOverlap,
  UsageError,
} from '../../shared/index.js';
import { type AddressPool, addressPool, blockPool, capacity, describeRange } from './address-pool.js';

/** Each worker with a net manager gets one of these: Oakestra's `/26`. */
const WORKER_SUBNET_SIZE = 64;

/** The overlay's address plan: `/26` worker subnets, and instance and service IPs from one subnet. */
export interface AddressPlan {
  workerSubnets: AddressPool;
  serviceAddresses: AddressPool;
}

/**
 * Reads `--worker-subnets` (a range `a.b.c.d-e.f.g.h` or a CIDR block) and `--service-subnet` (a CIDR block).
 * Throws UsageError with one line naming the flag for a bad value, a worker range without room for a `/26`, a
 * service subnet without two usable addresses, or ranges that overlap.
 */
export function parseAddressPlan(workerSubnets: string, serviceSubnet: string): AddressPlan {
  const workerRange = readRange('--worker-subnets', workerSubnets, true);
  const serviceRange = readRange('--service-subnet', serviceSubnet, false);
  const workers = blockPool('worker subnet', workerRange, WORKER_SUBNET_SIZE);
  if (capacity(workers) === 0) {
    throw new UsageError(
      `--worker-subnets: ${describeRange(workerRange)} holds no whole /26 (64 addresses aligned to 64)`,
    );
  }
  const services = addressPool('service address', serviceRange);
  if (capacity(services) < 2) {
    throw new UsageError(
      `--service-subnet: ${describeRange(serviceRange)} is too small; it needs at least a /30 (a service IP and an instance IP)`,
    );
  }
  if (rangesOverlap(workerRange, serviceRange)) {
    throw new UsageError(
      `--worker-subnets ${describeRange(workerRange)} and --service-subnet ${describeRange(serviceRange)} overlap`,
    );
  }
  return { workerSubnets: workers, serviceAddresses: services };
}

function readRange(flag: string, text: string, rangeAllowed: boolean): AddressRange {
  const value = text.trim();
  try {
    if (!value.includes('/')) {
      if (rangeAllowed) return parseRange(value);
      return parseCidr(value);
    }
    const block = parseCidr(value);
    const address = value.split('/')[0]!;
    // 10.30.0.5/16 is most likely a typo: say so instead of quietly using 10.30.0.0/16.
    if (ipToNumber(address) !== block.first) {
      throw new Error(
        `"${value}" has host bits set; did you mean ${numberToIp(block.first)}/${block.prefix}?`,
      );
    }
    return block;
  } catch (error) {
    throw new UsageError(`${flag}: ${(error as Error).message}`);
  }
}
