import { execFileSync } from 'node:child_process';
import { WORKLOAD } from '../helpers/e2e-cluster.js';

/** `docker run -d` then `docker rm -f` of the workload the benches deploy: the baseline for the same image, in the same run; ms. */
export function dockerRunOnce(): number {
  const started = performance.now();
  const id = execFileSync(
    'docker',
    ['run', '-d', '--label', 'edge.bench=1', 'edge/busybox:latest', ...WORKLOAD],
    {
      encoding: 'utf8',
    },
  ).trim();
  const elapsed = performance.now() - started;
  execFileSync('docker', ['rm', '-f', id], { stdio: 'ignore' });
  return elapsed;
}
