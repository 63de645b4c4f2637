import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'vitest';
import { hasAesInstructions } from '../../net-manager/secure/aes-hardware.js';
import { report } from './report.js';

const PACKETS = Number(process.env.BENCH_AEAD_PACKETS ?? 300_000);

/**
 * The cost of sealing one packet with each data cipher of the encrypted overlay, the way the addon does it
 * (aead-cost.c, built against Node's OpenSSL headers and the system's libcrypto), per packet size: what each
 * packet adds on each side, beside the overlay bench's end-to-end figures.
 */
describe('AEAD cost per packet', () => {
  it('seals packets with ChaCha20-Poly1305 and AES-256-GCM', () => {
    const dir = mkdtempSync(join(tmpdir(), 'aead-cost-'));
    try {
      const binary = join(dir, 'aead-cost');
      execFileSync('cc', [
        '-O2',
        '-I/usr/include/node',
        '-o',
        binary,
        join(import.meta.dirname, 'aead-cost.c'),
        '-lcrypto',
      ]);
      const rows = execFileSync(binary, [String(PACKETS)], { encoding: 'utf8' })
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { cipher: string; bytes: number; nsPerPacket: number });
      report('aead-cost', rows, { packets: PACKETS, aesInstructions: hasAesInstructions() });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
