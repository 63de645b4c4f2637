import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../shared/atomic-file.js';

/** What the cluster manager gave this node at its first registration; kept so it keeps its id. */
export const IdentitySchema = z.object({ nodeId: z.string().min(1), nodeSecret: z.string().min(1) });
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
