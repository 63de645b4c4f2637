import type { CommandRunner } from './ip-command.js';

/** A route of the underlay as the kernel reports it: the device it leaves by and the address it sends from. */
export interface UnderlayRoute {
  dev?: string;
  src?: string;
  via?: string;
}

/** The route the kernel picks towards `address` (`ip -4 route get`); empty when there is none. */
export async function routeTo(runner: CommandRunner, address: string): Promise<UnderlayRoute> {
  return parseRoute(await runner.run(['ip', '-4', 'route', 'get', address]).catch(() => ''));
}

/** The default route (`ip -4 route show default`, the first); empty when there is none. */
export async function defaultRoute(runner: CommandRunner): Promise<UnderlayRoute> {
  const output = await runner.run(['ip', '-4', 'route', 'show', 'default']).catch(() => '');
  return parseRoute(output.split('\n')[0] ?? '');
}

function parseRoute(line: string): UnderlayRoute {
  const dev = /\bdev (\S+)/.exec(line)?.[1];
  const src = /\bsrc (\d+\.\d+\.\d+\.\d+)/.exec(line)?.[1];
  const via = /\bvia (\d+\.\d+\.\d+\.\d+)/.exec(line)?.[1];
  return {
    ...(dev && /^[A-Za-z0-9_.@-]{1,31}$/.test(dev) ? { dev: dev.replace(/@.*$/, '') } : {}),
    ...(src ? { src } : {}),
    ...(via ? { via } : {}),
  };
}
