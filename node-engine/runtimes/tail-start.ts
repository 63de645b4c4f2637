/** A piece of text on disk, read by position: one file of a workload's output, as big as it was when opened. */
export interface OutputSegment {
  size: number;
  read(position: number, length: number): Promise<Buffer>;
}

/** Bytes read backwards at a time when looking for where the last lines start. */
const BLOCK_BYTES = 64 * 1024;
const NEWLINE = 0x0a;

/**
 * Where the last `lines` lines of `segments` (oldest first, read as one text) start: the segment's index and the
 * offset in it. A newline that ends the text ends its last line (it starts no empty one), as `tail -n` counts.
 * Reads backwards block by block, holding one block: a tail of a 30 MB file costs what the lines it skips do.
 */
export async function tailStart(
  segments: OutputSegment[],
  lines: number,
): Promise<{ index: number; offset: number }> {
  if (segments.length === 0) return { index: 0, offset: 0 };
  const lastIndex = segments.length - 1;
  if (lines === 0) return { index: lastIndex, offset: segments[lastIndex]!.size };
  let found = 0;
  let atEnd = true;
  for (let index = lastIndex; index >= 0; index--) {
    const segment = segments[index]!;
    let end = segment.size;
    while (end > 0) {
      const start = Math.max(0, end - BLOCK_BYTES);
      const block = await segment.read(start, end - start);
      for (let at = block.length - 1; at >= 0; at--) {
        const isNewline = block[at] === NEWLINE;
        if (atEnd) {
          atEnd = false;
          if (isNewline) continue;
        }
        if (isNewline && ++found === lines) return { index, offset: start + at + 1 };
      }
      end = start;
    }
  }
  return { index: 0, offset: 0 };
}
