/** Enough to read on one line; a fleet of thousands would otherwise write a novel into every instance. */
const MAX_NODES_NAMED = 10;

/** `no node fits: edge-a: not enough memory (...); edge-b: offline`, nodes in name order. */
export function summarizeReasons(reasons: Record<string, string>, prefix = 'no node fits'): string {
  const names = Object.keys(reasons).sort();
  if (names.length === 0) return 'no nodes registered';
  const shown = names.slice(0, MAX_NODES_NAMED).map((name) => `${name}: ${reasons[name]}`);
  const more = names.length - shown.length;
  return `${prefix}: ${shown.join('; ')}${more > 0 ? `; ... and ${more} more nodes` : ''}`;
}
