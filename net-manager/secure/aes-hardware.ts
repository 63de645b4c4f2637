import { readFileSync } from 'node:fs';

/**
 * Whether this CPU has AES instructions (x86's AES-NI, ARMv8's crypto extension: `aes` among the flags or
 * features in /proc/cpuinfo). With them AES-256-GCM seals a packet in less than half the time ChaCha20-Poly1305
 * takes (BENCHMARKS.md); without them (a Raspberry Pi 4) ChaCha20-Poly1305 is the faster one.
 */
export function hasAesInstructions(cpuinfo = '/proc/cpuinfo'): boolean {
  let text: string;
  try {
    text = readFileSync(cpuinfo, 'utf8');
  } catch {
    return false;
  }
  return /^(flags|Features)\s*:.*\baes\b/m.test(text);
}
