// Row and column means of the heatmap grid. Errors average arithmetically; ratios average
// geometrically (the mean of 2× and 0.5× is "no change", 1×, not 1.25×). Empty cells and
// skipped matrices (NaN) are left out; a row or column with nothing to average gives NaN.

export type MeanKind = 'arithmetic' | 'geometric';

/** Mean of the finite values (geometric: of the positive ones); NaN when there are none. */
export function mean(values: Iterable<number>, kind: MeanKind = 'arithmetic'): number {
  let sum = 0,
    n = 0;
  for (const v of values) {
    if (!Number.isFinite(v) || (kind === 'geometric' && v <= 0)) continue;
    sum += kind === 'geometric' ? Math.log(v) : v;
    n++;
  }
  if (!n) return NaN;
  return kind === 'geometric' ? Math.exp(sum / n) : sum / n;
}

export interface GridMeans {
  rows: number[];
  columns: number[];
  /** Over every cell of the grid (not the mean of the row means, which would weight short rows up). */
  all: number;
}

/** `at[r][c]` is the index into `values` of the cell at row r, column c, or undefined when empty. */
export function gridMeans(
  at: readonly (readonly (number | undefined)[])[],
  values: ArrayLike<number>,
  kind: MeanKind,
): GridMeans {
  const cols = at.length ? at[0].length : 0;
  const pick = (idx: (number | undefined)[]) => idx.filter((i): i is number => i !== undefined).map((i) => values[i]);
  return {
    rows: at.map((row) => mean(pick([...row]), kind)),
    columns: Array.from({ length: cols }, (_, c) => mean(pick(at.map((row) => row[c])), kind)),
    all: mean(pick(at.flat()), kind),
  };
}
