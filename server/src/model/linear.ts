// Linear layers of the forward pass on the tfjs backend: the batch's input X (tokens × in) is
// held on the device once and multiplied by the concatenated transposed weights of every layer
// that reads it (q|k|v, gate|up), so one GEMM serves a group. Transposing W on the host is
// O(out·in), small next to the O(tokens·out·in) product. The native backend takes the weights
// untransposed instead.

import type { MatmulBackend } from '../linalg/backend';
import { NativeBackend } from '../linalg/nativeBackend';

/** Tile edge of the transposes: a row-by-row transpose misses the cache on every write once a
 *  row of the destination is wider than a few pages (it was ~3 s of a 1024-token pass). */
const TILE = 32;

/** dst[j·stride + col0 + i] = src[(row0 + i)·cols + j] for i < rows, j < cols: rows
 *  row0 … row0 + rows − 1 of src (row-major, `cols` wide) transposed into columns col0 … of dst. */
export function transposeInto(
  src: Float32Array,
  row0: number,
  rows: number,
  cols: number,
  dst: Float32Array,
  stride: number,
  col0: number,
): void {
  for (let i0 = 0; i0 < rows; i0 += TILE) {
    const i1 = Math.min(rows, i0 + TILE);
    for (let j0 = 0; j0 < cols; j0 += TILE) {
      const j1 = Math.min(cols, j0 + TILE);
      for (let i = i0; i < i1; i++) {
        const s = (row0 + i) * cols,
          d = col0 + i;
        for (let j = j0; j < j1; j++) dst[j * stride + d] = src[s + j];
      }
    }
  }
}

/** Wᵀ of several [out_i, in] weights side by side: in × Σ out_i, row-major. */
export function concatTransposed(ws: readonly Float32Array[], outs: readonly number[], inDim: number): Float32Array {
  const total = outs.reduce((a, b) => a + b, 0);
  const t = new Float32Array(inDim * total);
  let c0 = 0;
  ws.forEach((w, k) => {
    transposeInto(w, 0, outs[k], inDim, t, total, c0);
    c0 += outs[k];
  });
  return t;
}

/** X · [W_1ᵀ | W_2ᵀ | …] (+ biases): tokens × Σ out_i, in `into` when given; in bf16 products
 *  (X and W rounded, float32 sums) when `bf16` and the backend has them (native AVX512-BF16).
 *  W as bf16 bit patterns (a BF16 checkpoint's, as read) only in those bf16 products. */
export async function linearGroup(
  backend: MatmulBackend,
  x: Float32Array,
  tokens: number,
  inDim: number,
  ws: readonly Float32Array[] | readonly Uint16Array[],
  outs: readonly number[],
  biases?: readonly (Float32Array | undefined)[],
  into?: Float32Array,
  bf16 = false,
): Promise<Float32Array> {
  const total = outs.reduce((a, b) => a + b, 0);
  let y: Float32Array;
  if (backend instanceof NativeBackend) {
    // The module packs the weights' rows as they lie: the transposed copy in JavaScript cost
    // ~1.1 s a layer of a 1.1B model.
    y = backend.timesTransposed(x, tokens, inDim, ws, total, into, bf16 && backend.bf16);
  } else {
    if (ws.some((w) => w instanceof Uint16Array))
      throw new Error('linearGroup: bf16 weights need native bf16 products');
    const wt = concatTransposed(ws as readonly Float32Array[], outs, inDim);
    const held = await backend.hold(x, tokens, inDim);
    try {
      y = await held.times(wt, total, into);
    } finally {
      held.dispose();
    }
  }
  if (biases?.some((b) => b)) {
    let c0 = 0;
    outs.forEach((o, k) => {
      const b = biases[k];
      if (b) for (let t = 0; t < tokens; t++) for (let j = 0; j < o; j++) y[t * total + c0 + j] += b[j];
      c0 += o;
    });
  }
  return y;
}
