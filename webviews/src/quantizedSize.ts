// What the heatmap's header says the quantized matrices take: their stored bytes under the
// registry's accounting (HQQ as it stores and loads them; codebook quantizers as
// `--format packed` stores them), the same figures the planner and the report count.

import type { HeatmapSummary, MatrixReport } from '../../server/src/protocol/lsp_ext';
import type { ScaleStorage } from '../../server/src/registry';
import { isQuantizer, reportedBytesOf, reportStorageOf } from '../../server/src/registry';

export function quantizedSize(matrices: MatrixReport[]): HeatmapSummary['quantized'] {
  let bytes = 0,
    parameters = 0;
  let storage: ScaleStorage | undefined;
  for (const m of matrices) {
    if (m.skipped || !isQuantizer(m.quantizer)) continue;
    storage ??= reportStorageOf(m.quantizer);
    bytes += reportedBytesOf(m);
    parameters += m.shape[0] * m.shape[1];
  }
  return storage ? { bytes, parameters, storage } : undefined;
}
