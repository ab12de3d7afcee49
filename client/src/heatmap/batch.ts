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
  return {
    cells,
    loftq: Float32Array.from(matrices, (m) => (m.skipped ? NaN : m.relError)),
    qlora: Float32Array.from(matrices, (m) => (m.skipped ? NaN : m.qloraRelError)),
    perIter,
    perIterOffsets: offsets,
  };
}
