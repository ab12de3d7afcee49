// The calibrated output error of a written LoftQ output, recomputed from its files in float64:
// an independent check of what the engine reports (no kernel, no Cholesky of the metric).
import * as path from 'node:path';
import { openCheckpoint, readTensorF32 } from '../server/src/checkpoint';
import type { InputStat } from '../server/src/model/stats';

/**
 * tr(E·H·Eᵀ) and tr(W·H·Wᵀ) for E = W − Q − B·A, H = G + λ·mean(diag G)·I formed from the
 * statistic directly: `error` is ‖(W − Q − B·A)·S‖², `norm` ‖W·S‖² with S·Sᵀ = H.
 */
export async function outputErrorOnDisk(
  original: string,
  out: string,
  name: string,
  stat: InputStat,
  ridge: number,
): Promise<{ error: number; norm: number }> {
  const src = await openCheckpoint(original);
  const dst = await openCheckpoint(path.join(out, 'model.safetensors'));
  const ad = await openCheckpoint(path.join(out, 'loftq_init', 'adapter_model.safetensors'));
  const mod = name.replace(/\.weight$/, '');
  const w = await readTensorF32(src.byName.get(name)!),
    q = await readTensorF32(dst.byName.get(name)!);
  const A = ad.byName.get(`base_model.model.${mod}.lora_A.weight`)!;
  const a = await readTensorF32(A),
    b = await readTensorF32(ad.byName.get(`base_model.model.${mod}.lora_B.weight`)!);
  const [rows, cols] = src.byName.get(name)!.shape;
  const r = A.shape[0];
  const n = stat.dim;
  const diag = (i: number) => (stat.kind === 'full' ? stat.g[i * n + i] : stat.d[i]);
  let mean = 0;
  for (let i = 0; i < n; i++) mean += diag(i) / n;
  const h = (i: number, j: number) =>
    (stat.kind === 'full' ? stat.g[i * n + j] : i === j ? stat.d[i] : 0) + (i === j ? ridge * mean : 0);
  let error = 0,
    norm = 0;
  const e = new Float64Array(cols),
    wr = new Float64Array(cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      let ba = 0;
      for (let p = 0; p < r; p++) ba += b[i * r + p] * a[p * cols + j];
      wr[j] = w[i * cols + j];
      e[j] = w[i * cols + j] - q[i * cols + j] - ba;
    }
    for (let j = 0; j < cols; j++)
      for (let k = 0; k < cols; k++) {
        const hv = h(j, k);
        error += e[j] * hv * e[k];
        norm += wr[j] * hv * wr[k];
      }
  }
  return { error, norm };
}
