import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../shared/atomic-file.js';

/**
 * Who this node is: the secret it made for itself before it first joined (the cluster manager keeps only its
 * hash, and only this secret lets the node take its name again), and the id the cluster manager gave it.
 */
export const IdentitySchema = z.object({
  nodeId: z.string().min(1).optional(),
  nodeSecret: z.string().min(1),
});
export type Identity = z.infer<typeof IdentitySchema>;

export function identityPath(dataDir: string): string {
  return join(dataDir, 'identity.json');
}

/** The stored identity, or undefined when the node never registered (or the file is unreadable). */
export async function loadIdentity(dataDir: string): Promise<Identity | undefined> {
  try {
    const parsed = IdentitySchema.safeParse(JSON.parse(await readFile(identityPath(dataDir), 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

export async function saveIdentity(dataDir: string, identity: Identity): Promise<void> {
  await writeFileAtomic(identityPath(dataDir), JSON.stringify(identity));
}
