// An analysis report (`loftq analyze`) holds one LoftQ run per bit width in `analyses`; its
// `matrices` list each matrix at its first analysed width only. The heatmap shows one width at
// a time: the matrix reports of that width, shaped as a quantize report's. Pure (types only).
import type { MatrixReport, Report } from '../../../server/src/protocol/lsp_ext';

/** The report's analysed widths, ascending; empty for a quantize report. */
export function analysedWidths(r: Report): number[] {
  return [...new Set((r.analyses ?? []).map((a) => a.bits))].sort((x, y) => x - y);
}

/** The matrices at `bits` of an analysis report (a quantize report's own matrices otherwise). */
export function matricesAtWidth(r: Report, bits: number): MatrixReport[] {
  const a = r.analyses?.find((x) => x.bits === bits);
  if (!a) return r.matrices;
  const dtypes = new Map(r.matrices.map((m) => [m.name, m.dtype]));
  return a.matrices.map((row) =>
    calibrated(row, {
      name: row.name,
      shape: row.shape,
      dtype: dtypes.get(row.name) ?? r.matrices[0]?.dtype ?? 'F32',
      bits,
      // The engine clamps the analysed rank to min(out, in) per matrix.
      rank: Math.min(a.rank, ...row.shape),
      iters: a.iters,
      quantizer: a.quantizer,
      blockSize: a.blockSize,
      relError: row.relError,
      relErrorPerIter: [row.relError],
      qloraRelError: row.qloraRelError,
      frobeniusNorm: row.frobeniusNorm,
      seconds: 0,
    }),
  );
}

/** A calibrated analysis's output errors, where its rows carry them. */
function calibrated(row: object, m: MatrixReport): MatrixReport {
  const r = row as Partial<Pick<MatrixReport, 'outputRelError' | 'qloraOutputRelError'>>;
  return {
    ...m,
    ...(r.outputRelError !== undefined && { outputRelError: r.outputRelError }),
    ...(r.qloraOutputRelError !== undefined && { qloraOutputRelError: r.qloraOutputRelError }),
  };
}
