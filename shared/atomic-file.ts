import { open, readdir, rename, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** The temporary file a write of `path` by this process uses. */
function tempPathOf(path: string): string {
  return `${path}.${process.pid}.tmp`;
}

/**
 * Writes a file so that a crash leaves either the old or the new content, never a torn one:
 * write a temporary file, fsync it, rename it over the target, fsync the folder (so the rename itself is durable).
 */
export async function writeFileAtomic(path: string, content: string, mode = 0o600): Promise<void> {
  const tmp = tempPathOf(path);
  try {
    await writeFile(tmp, content, { mode });
    const file = await open(tmp, 'r+');
    try {
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, path);
  } catch (error) {
    // A full disk: what was written of the temporary file goes, the target keeps its old content.
    await unlink(tmp).catch(() => undefined);
    throw error;
  }
  const folder = await open(dirname(path), 'r');
  try {
    await folder.sync();
  } finally {
    await folder.close();
  }
}

/** Removes temporary files that writes of `path` left behind when their process died mid-write. */
export async function removeStaleTempFiles(path: string): Promise<number> {
  const prefix = `${basename(path)}.`;
  let removed = 0;
  for (const name of await readdir(dirname(path)).catch(() => [] as string[])) {
    if (!name.startsWith(prefix) || !/\.\d+\.tmp$/.test(name)) continue;
    await unlink(join(dirname(path), name)).then(
      () => removed++,
      () => undefined,
    );
  }
  return removed;
}
