// Linear layers of the forward pass on the tfjs backend: the batch's input X (tokens × in) is
// held on the device once and multiplied by the concatenated transposed weights of every layer
// that reads it (q|k|v, gate|up), so one GEMM serves a group. Transposing W on the host is
// O(out·in), small next to the O(tokens·out·in) product.

import type { MatmulBackend } from '../linalg/backend';

/** Wᵀ of several [out_i, in] weights side by side: in × Σ out_i, row-major. */
export function concatTransposed(ws: readonly Float32Array[], outs: readonly number[], inDim: number): Float32Array {
  const total = outs.reduce((a, b) => a + b, 0);
  const t = new Float32Array(inDim * total);
  let c0 = 0;
  ws.forEach((w, k) => {
    const rows = outs[k];
    for (let r = 0; r < rows; r++) {
      const src = r * inDim;
      for (let i = 0; i < inDim; i++) t[i * total + c0 + r] = w[src + i];
    }
    c0 += rows;
  });
  return t;
}

/** X · [W_1ᵀ | W_2ᵀ | …] (+ biases): tokens × Σ out_i. */
export async function linearGroup(
  backend: MatmulBackend,
  x: Float32Array,
  tokens: number,
  inDim: number,
  ws: readonly Float32Array[],
  outs: readonly number[],
  biases?: readonly (Float32Array | undefined)[],
): Promise<Float32Array> {
  const wt = concatTransposed(ws, outs, inDim);
  const total = wt.length / inDim;
  const held = await backend.hold(x, tokens, inDim);
  let y: Float32Array;
  try {
    y = await held.times(wt, total);
  } finally {
    held.dispose();
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
