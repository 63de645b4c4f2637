import { Agent, fetch as undiciFetch } from 'undici';

/**
 * `fetch` that verifies HTTPS servers with `ca` (PEM) instead of the system's CAs; with no `ca`, the global
 * `fetch`. Node's own fetch takes no CA of its own, so this one is undici's, with a dispatcher that pins it.
 */
export function trustedFetch(ca: string | undefined): typeof fetch {
  if (!ca) return fetch;
  const dispatcher = new Agent({ connect: { ca } });
  return ((input: Parameters<typeof fetch>[0], init?: RequestInit) =>
    undiciFetch(input as never, { ...(init as object), dispatcher } as never)) as unknown as typeof fetch;
}
