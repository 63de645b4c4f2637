/**
 * Monotonic milliseconds: every deadline, back-off and expiry of the programs is measured on this clock, so that
 * setting the date forward or back (NTP after a boot without a real-time clock, an operator) neither stalls nor
 * hurries a retry, nor expires every flow and route at once. Wall-clock time (`Date.now()`) is for timestamps
 * others read, and for comparing with other processes' times.
 */
export function monotonicMs(): number {
  return performance.now();
}
