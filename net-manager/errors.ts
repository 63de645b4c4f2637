/** A request the net manager cannot serve, with the HTTP status its local API answers. */
export class NetManagerError extends Error {
  override name = 'NetManagerError';
  constructor(
    readonly code: 'invalid_input' | 'not_ready' | 'not_found' | 'attach_failed' | 'subnet_full' | 'internal',
    message: string,
    readonly status: number,
    readonly details: { path: string; message: string }[] = [],
  ) {
    super(message);
  }
}
