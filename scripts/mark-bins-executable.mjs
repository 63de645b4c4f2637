// Marks the programs of package.json's `bin` executable (tsc writes them 0644): a link to one, such as the
// `edgectl` start-up.sh puts on PATH, then runs it by its `#!/usr/bin/env node` line.
import { chmodSync, existsSync, readFileSync } from 'node:fs';

const { bin } = JSON.parse(readFileSync('package.json', 'utf8'));
for (const program of Object.values(bin)) {
  if (existsSync(program)) chmodSync(program, 0o755);
}
