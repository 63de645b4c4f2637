import { execFile } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * The address of the interface that routes to `host` (the broker, normally on the cluster manager's machine):
 * where peers send this worker's overlay UDP unless `--public-ip` says otherwise.
 */
export async function addressTowards(host: string): Promise<string> {
  const { address } = await lookup(host, { family: 4 });
  const { stdout } = await run('ip', ['-4', 'route', 'get', address], { timeout: 5000 });
  const source = /\bsrc (\d+\.\d+\.\d+\.\d+)/.exec(stdout)?.[1];
  if (!source)
    throw new Error(
      `no route to ${host} (${address}): cannot tell this worker's public IP; pass --public-ip`,
    );
  return source;
}
