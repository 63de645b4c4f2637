import { fileURLToPath } from 'node:url';

/**
 * The dashboard's static files: `public/` next to this module, both in the sources and in `dist/` (where the
 * build copies it), so the cluster manager can serve it with `express.static(dashboardDir())`.
 */
export function dashboardDir(): string {
  return fileURLToPath(new URL('./public', import.meta.url));
}
