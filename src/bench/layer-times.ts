/** Splitting a stage's progress ticks into per-layer wall times (bench). */

/**
 * Per-layer wall seconds from progress timestamps: `stamps[i]` is the time of tick i + 1, `counts[l]` the ticks layer
 * l takes (the layers come first, in order), `trailing` the ticks after the last layer (the output head). Null if
 * the counts do not add up to what was ticked.
 */
export function layerTimes(start: number, stamps: number[], counts: number[], trailing = 0): number[] | null {
  if (stamps.length !== counts.reduce((s, c) => s + c, trailing)) return null;
  const out: number[] = [];
  let i = 0;
  let prev = start;
  for (const c of counts) {
    i += c;
    out.push((stamps[i - 1]! - prev) / 1000);
    prev = stamps[i - 1]!;
  }
  return out;
}
