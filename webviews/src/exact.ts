// A matrix whose adapter rank is at least min(out, in): the low-rank factors can hold the
// whole residual W − Q, so LoftQ's error is 0 up to rounding (the heatmap's 0.0000 cells) and
// its improvement over QLoRA has no finite ratio. The cell's tooltip, the details and the
// legend say so. Pure: no DOM.

export interface RankedCell {
  shape: [number, number];
  rank: number;
}

export function capturesResidual(c: RankedCell): boolean {
  return c.rank >= Math.min(c.shape[0], c.shape[1]);
}

/** One sentence for a cell that captures its residual, else undefined. */
export function exactNote(c: RankedCell): string | undefined {
  if (!capturesResidual(c)) return undefined;
  const m = Math.min(c.shape[0], c.shape[1]);
  return (
    `rank ${c.rank} ≥ min(out, in) = ${m}: the adapter holds the whole residual W − Q, so the LoftQ error ` +
    'is 0 up to rounding (the matrix is kept exactly, at the cost of a full-rank adapter)'
  );
}

/** The legend's line when some cells capture their residual, else undefined. */
export function exactLegend(cells: RankedCell[]): string | undefined {
  const n = cells.filter(capturesResidual).length;
  if (!n) return undefined;
  return (
    `${n} matri${n === 1 ? 'x has' : 'ces have'} rank ≥ min(out, in): the adapter holds the whole residual, ` +
    'so the LoftQ error is 0 (shown as 0.0000)'
  );
}
