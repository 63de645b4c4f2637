/**
 * What went wrong with a connection to the cluster manager or the broker, in words an operator can act on.
 * Socket.IO reports a failed WebSocket as "websocket error" and keeps the cause in `description`: the TLS
 * error underneath is what tells a wrong CA from a missing name or a clock in 1970.
 */
export function describeConnectError(error: unknown): string {
  const message = innermostMessage(error);
  const hint = HINTS.find(([pattern]) => pattern.test(message))?.[1];
  return hint ? `${message} (${hint})` : message;
}

const HINTS: Array<[RegExp, string]> = [
  [
    /altnames/,
    "connect by a name or address in the server certificate, or add this one with the cluster manager's --tls-san",
  ],
  [/not yet valid|certificate has expired/, "is this machine's clock right?"],
  [
    /self[- ]signed|unable to verify|unable to get local issuer|certificate signature failure/,
    'the server certificate is not from the cluster CA this node trusts',
  ],
  [
    /wrong version number|packet length too long|unknown protocol/,
    'the server speaks plain text: is it started with --insecure? then use http://',
  ],
  [/Unexpected server response: 400/, 'the server may speak HTTPS: use https://'],
];

function innermostMessage(error: unknown): string {
  let current: unknown = error;
  for (let depth = 0; depth < 4; depth++) {
    const next = (current as { description?: unknown; error?: unknown; cause?: unknown } | undefined) ?? {};
    const inner = next.description ?? next.error ?? next.cause;
    if (inner === undefined || inner === null || typeof inner !== 'object') break;
    current = inner;
  }
  const message = (current as { message?: unknown } | undefined)?.message;
  if (typeof message === 'string' && message) return message;
  return error instanceof Error ? error.message : String(error);
}
