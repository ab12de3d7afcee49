// Matrix reports → the typed-array batch the heatmap webview takes (numbers never travel
// as JSON number lists).
import type { HeatmapBatch, HeatmapCell, MatrixReport } from '../../../server/src/protocol/lsp_ext';
import { layoutTensors, parseLayerName } from '../../../webviews/src/layout';

export function toBatch(matrices: readonly MatrixReport[]): HeatmapBatch {
  const layout = layoutTensors(matrices.map((m) => m.name));
  const cells: HeatmapCell[] = matrices.map((m, i) => {
    const at = layout.cells[i];
    return {
      name: m.name,
      layer: parseLayerName(m.name)?.index ?? -1,
      module: at ? layout.columns[at[1]].label : '',
      shape: m.shape,
      bits: m.bits,
      rank: m.rank,
    };
  });
  const offsets = new Uint32Array(matrices.length + 1);
  matrices.forEach((m, i) => (offsets[i + 1] = offsets[i] + (m.relErrorPerIter?.length ?? 0)));
  const perIter = new Float32Array(offsets[matrices.length]);
  matrices.forEach((m, i) => perIter.set(m.relErrorPerIter ?? [], offsets[i]));
  const num = (v: number | undefined, m: MatrixReport) => (m.skipped || v === undefined ? NaN : v);
  const hasOutput = matrices.some((m) => m.outputRelError !== undefined);
  return {
    cells,
    loftq: Float32Array.from(matrices, (m) => num(m.relError, m)),
    qlora: Float32Array.from(matrices, (m) => num(m.qloraRelError, m)),
    perIter,
    perIterOffsets: offsets,
    ...(hasOutput && {
      output: Float32Array.from(matrices, (m) => num(m.outputRelError, m)),
      qloraOutput: Float32Array.from(matrices, (m) => num(m.qloraOutputRelError, m)),
    }),
    bestIter: Uint16Array.from(matrices, (m) => m.bestIter ?? 0),
  };
}
