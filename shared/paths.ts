import { existsSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The project directory: the folder with package.json above this file (works from `dist/` and from sources). */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) return process.cwd();
    dir = parent;
  }
  return dir;
}

/** A data dir flag: relative paths are under the project directory, not the working directory. */
export function resolveDataDir(value: string): string {
  return isAbsolute(value) ? value : resolve(projectRoot(), value);
}
