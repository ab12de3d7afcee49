// Calibration statistics: for each linear layer's input X (tokens × width), the second moment
// G = XᵀX / N, accumulated in float64 across chunks of tokens (each chunk's XᵀX is one float32
// GEMM on the backend). q/k/v share one object, gate/up another; o_proj and down_proj have
// their own.
//
// Full or diagonal: a full G costs width² float64 — 512 MiB at width 8192 — and calibrated
// LoftQ factors it (a width³ eigen/Cholesky step per layer input). DEFAULT_FULL_STAT_MAX_DIM
// = 8192 keeps every input of 7B-class Llamas full (hidden 4096; Llama-2-7B's MLP input to
// down_proj is 11008 wide and gets the diagonal), and bounds one statistic at 512 MiB.

import type { Checkpoint } from '../checkpoint/checkpoint';
import { throwIfAborted } from '../base/errors';
import type { MatmulBackend } from '../linalg/backend';
import { ModelConfig, readModelConfig } from './config';
import { ForwardResult, runForward } from './forward';
import type { InputStat, InputStats } from './stats';
import { CALIBRATION_SPECS } from '../registry';

export const DEFAULT_FULL_STAT_MAX_DIM: number = CALIBRATION_SPECS.fullStatMaxDim.default;
/** Tokens per XᵀX GEMM: bounds the transposed copy of a chunk (width × chunk floats). */
const CHUNK_TOKENS = 512;

export interface CollectOptions {
  backend: MatmulBackend;
  /** Inputs at most this wide get a full G; wider ones only its diagonal. */
  fullStatMaxDim?: number;
  signal?: AbortSignal;
  config?: ModelConfig;
  onLayer?(layer: number, layers: number): void;
}

/** Adds XᵀX of rows [t0, t1) of x (tokens × dim) into g (dim × dim, float64). */
async function accumulateFull(
  backend: MatmulBackend,
  x: Float32Array,
  dim: number,
  t0: number,
  t1: number,
  g: Float64Array,
): Promise<void> {
  const n = t1 - t0;
  const xt = new Float32Array(dim * n);
  for (let t = 0; t < n; t++) for (let i = 0; i < dim; i++) xt[i * n + t] = x[(t0 + t) * dim + i];
  const held = await backend.hold(xt, dim, n);
  try {
    const prod = await held.times(x.subarray(t0 * dim, t1 * dim), dim);
    for (let i = 0; i < g.length; i++) g[i] += prod[i];
  } finally {
    held.dispose();
  }
}

function accumulateDiag(x: Float32Array, tokens: number, dim: number, d: Float64Array): void {
  for (let t = 0; t < tokens; t++) {
    const o = t * dim;
    for (let i = 0; i < dim; i++) d[i] += x[o + i] * x[o + i];
  }
}

export interface CollectResult {
  stats: InputStats;
  forward: ForwardResult;
}

/** Runs the original model over `sequences` and returns G per linear weight name. */
export async function collectInputStatsWithInfo(
  ck: Checkpoint,
  sequences: readonly (readonly number[])[],
  opts: CollectOptions,
): Promise<CollectResult> {
  const c = opts.config ?? (await readModelConfig(ck.folder));
  const maxFull = opts.fullStatMaxDim ?? DEFAULT_FULL_STAT_MAX_DIM;
  const stats: InputStats = new Map();
  const forward = await runForward(ck, c, sequences, {
    backend: opts.backend,
    signal: opts.signal,
    onLayer: opts.onLayer,
    hooks: {
      onInput: async (names, x, tokens, dim) => {
        let stat: InputStat;
        if (dim <= maxFull) {
          const g = new Float64Array(dim * dim);
          for (let t0 = 0; t0 < tokens; t0 += CHUNK_TOKENS) {
            throwIfAborted(opts.signal);
            await accumulateFull(opts.backend, x, dim, t0, Math.min(tokens, t0 + CHUNK_TOKENS), g);
          }
          for (let i = 0; i < g.length; i++) g[i] /= tokens;
          // The float32 chunk products are symmetric only up to rounding: make G exactly symmetric.
          for (let i = 0; i < dim; i++)
            for (let j = i + 1; j < dim; j++) g[j * dim + i] = g[i * dim + j] = (g[i * dim + j] + g[j * dim + i]) / 2;
          stat = { kind: 'full', dim, count: tokens, g };
        } else {
          const d = new Float64Array(dim);
          accumulateDiag(x, tokens, dim, d);
          for (let i = 0; i < dim; i++) d[i] /= tokens;
          stat = { kind: 'diag', dim, count: tokens, d };
        }
        for (const n of names) stats.set(n, stat);
      },
    },
  });
  return { stats, forward };
}

export async function collectInputStats(
  ck: Checkpoint,
  sequences: readonly (readonly number[])[],
  opts: CollectOptions,
): Promise<InputStats> {
  return (await collectInputStatsWithInfo(ck, sequences, opts)).stats;
}
