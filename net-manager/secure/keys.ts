import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../../shared/atomic-file.js';
import { generateStaticKeys, rawPrivateKey, type StaticKeys, staticKeysFromPrivate } from './noise.js';

/** `<data-dir>/overlay-key`: this worker's X25519 private key, base64, mode 0600. */
export const KEY_FILE = 'overlay-key';

/**
 * This worker's overlay key pair: read from the data dir, or made and stored at the first start. The public key
 * goes to the cluster manager with every announce; peers get it from there. A file that is not a key is an
 * error (nothing is overwritten: the operator decides), so a corrupt disk cannot silently change identity.
 */
export async function loadOverlayKeys(dataDir: string): Promise<StaticKeys> {
  const path = join(dataDir, KEY_FILE);
  let text: string | undefined;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  if (text === undefined) {
    const keys = generateStaticKeys();
    await writeFileAtomic(path, `${rawPrivateKey(keys.privateKey).toString('base64')}\n`);
    return keys;
  }
  const raw = Buffer.from(text.trim(), 'base64');
  if (raw.length !== 32 || raw.toString('base64') !== text.trim())
    throw new Error(`${path} is not an overlay key (32 bytes, base64); remove it to make a new one`);
  return staticKeysFromPrivate(raw);
}
