// Copies the files tsc does not emit (the dashboard's static page) into dist/.
import { cpSync, existsSync } from 'node:fs';

const assets = [['cluster-manager/dashboard/public', 'dist/cluster-manager/dashboard/public']];
for (const [from, to] of assets) {
  if (existsSync(from)) cpSync(from, to, { recursive: true });
}
