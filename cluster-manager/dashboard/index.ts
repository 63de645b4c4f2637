import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

/**
 * The dashboard's static files: `public/` next to this module, both in the sources and in `dist/` (where the
 * build copies it), so the cluster manager can serve it with `express.static(dashboardDir())`.
 */
export function dashboardDir(): string {
  return fileURLToPath(new URL('./public', import.meta.url));
}

/**
 * The browser build of `yaml` (the same package edgectl reads job files with), served at `/vendor/yaml/` so the
 * dashboard takes YAML specs: ES modules, same origin, nothing fetched from elsewhere.
 */
export function yamlBrowserDir(): string {
  return join(dirname(require.resolve('yaml/package.json')), 'browser', 'dist');
}
