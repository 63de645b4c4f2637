/**
 * `fetch` that verifies HTTPS servers with `ca` (PEM) instead of the system's CAs; with no `ca`, the global
 * `fetch`. Node's own fetch takes no CA of its own, so this one is undici's, with a dispatcher that pins it.
 * undici is loaded on first use: the node engine, which imports `shared/` whole, never needs it.
 */
export function trustedFetch(ca: string | undefined): typeof fetch {
  if (!ca) return fetch;
  const undici = import('undici').then(({ Agent, fetch: undiciFetch }) => ({
    dispatcher: new Agent({ connect: { ca } }),
    undiciFetch,
  }));
  return (async (input: Parameters<typeof fetch>[0], init?: RequestInit) => {
    const { dispatcher, undiciFetch } = await undici;
    return undiciFetch(input as never, { ...(init as object), dispatcher } as never);
  }) as unknown as typeof fetch;
}
