/** IPv4 addresses as unsigned 32-bit numbers, and the address ranges of the overlay plan. */

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function isIpv4(text: string): boolean {
  return IPV4.test(text);
}

/** `10.30.0.5` -> 169738245; throws on anything that is not a dotted quad. */
export function ipToNumber(text: string): number {
  if (!IPV4.test(text)) throw new Error(`"${text}" is not an IPv4 address`);
  const [a, b, c, d] = text.split('.').map(Number) as [number, number, number, number];
  return ((a << 24) >>> 0) + (b << 16) + (c << 8) + d;
}

export function numberToIp(value: number): string {
  return `${value >>> 24}.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}`;
}

/** An inclusive range of addresses. */
export interface AddressRange {
  first: number;
  last: number;
}

/** `10.30.0.0/16` -> its first and last address; throws with a clear message on a bad CIDR. */
export function parseCidr(text: string): AddressRange & { prefix: number } {
  const [address, prefixText, extra] = text.split('/');
  const prefix = Number(prefixText);
  if (
    extra !== undefined ||
    !address ||
    !isIpv4(address) ||
    !/^\d{1,2}$/.test(prefixText ?? '') ||
    prefix > 32
  ) {
    throw new Error(`"${text}" is not a CIDR block like 10.30.0.0/16`);
  }
  const size = 2 ** (32 - prefix);
  const first = ipToNumber(address) - (ipToNumber(address) % size);
  return { first, last: first + size - 1, prefix };
}

/** `10.18.0.0-10.29.255.255` or a CIDR block -> an inclusive range; throws with a clear message. */
export function parseRange(text: string): AddressRange {
  if (text.includes('/')) return parseCidr(text);
  const [from, to, extra] = text.split('-');
  if (extra !== undefined || !from || !to || !isIpv4(from.trim()) || !isIpv4(to.trim())) {
    throw new Error(`"${text}" is not an address range like 10.18.0.0-10.29.255.255 or a CIDR block`);
  }
  const first = ipToNumber(from.trim());
  const last = ipToNumber(to.trim());
  if (last < first) throw new Error(`"${text}": the range ends before it starts`);
  return { first, last };
}

/** Whether `inner` lies wholly inside `outer`. */
export function rangeWithin(inner: AddressRange, outer: AddressRange): boolean {
  return inner.first >= outer.first && inner.last <= outer.last;
}

export function rangesOverlap(a: AddressRange, b: AddressRange): boolean {
  return a.first <= b.last && b.first <= a.last;
}

/**
 * Why peers on other machines cannot send to `ip`, or undefined when they can: an overlay endpoint must be a
 * unicast address of this machine's own, not loopback, unspecified, multicast or broadcast.
 */
export function unreachableFromPeers(ip: string): string | undefined {
  const first = ipToNumber(ip) >>> 24;
  if (first === 127) return 'a loopback address';
  if (first === 0) return 'an unspecified address';
  if (first >= 224 && first <= 239) return 'a multicast address';
  if (ip === '255.255.255.255') return 'the broadcast address';
  return undefined;
}
