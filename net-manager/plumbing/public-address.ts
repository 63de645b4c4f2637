import { lookup } from 'node:dns/promises';
import type { CommandRunner } from './ip-command.js';

/**
 * The address of the interface that routes to `host` (the broker, normally on the cluster manager's machine):
 * where peers send this worker's overlay UDP unless `--public-ip` says otherwise.
 */
export async function addressTowards(runner: CommandRunner, host: string): Promise<string> {
  const { address } = await lookup(host, { family: 4 });
  const stdout = await runner.run(['ip', '-4', 'route', 'get', address]);
  const source = /\bsrc (\d+\.\d+\.\d+\.\d+)/.exec(stdout)?.[1];
  if (!source)
    throw new Error(
      `no route to ${host} (${address}): cannot tell this worker's public IP; pass --public-ip`,
    );
  return source;
}
