// Calibration statistics: for each linear layer's input X (tokens × width), the second moment
// G = XᵀX / N, accumulated in float64 across chunks of tokens (each chunk's XᵀX is one float32
// GEMM on the backend). q/k/v share one object, gate/up another; o_proj and down_proj have
// their own.
//
// Full or diagonal: a full G costs width² float64 — 512 MiB at width 8192 — and each matrix
// job holds its lower triangle in float32 twice (loftq/heldMetric.ts). DEFAULT_FULL_STAT_MAX_DIM
// = 8192 keeps every input of 7B-class Llamas full (hidden 4096; Llama-2-7B's MLP input to
// down_proj is 11008 wide and gets the diagonal), and bounds one statistic at 512 MiB.

import type { Checkpoint } from '../checkpoint/checkpoint';
import { InputError, yieldAndCheck } from '../base/errors';
import * as os from 'node:os';
import * as path from 'node:path';
import { createBackend, MatmulBackend } from '../linalg/backend';
import { createSplitBackend } from '../linalg/splitBackend';
import { NativeBackend, createNativeBackend } from '../linalg/nativeBackend';
import type { BackendChoice } from '../registry';
import { ModelConfig, readModelConfig } from './config';
import { ForwardResult, runForward } from './forward';
import { transposeInto } from './linear';
import type { InputStat, InputStats } from './stats';
import { CALIBRATION_SPECS } from '../registry';

export const DEFAULT_FULL_STAT_MAX_DIM: number = CALIBRATION_SPECS.fullStatMaxDim.default;
/** Tokens per XᵀX product: bounds the transposed copy of a chunk (width × chunk floats, 46 MB
 *  at width 5632); larger chunks mean fewer float64 accumulations of the width² result. */
const CHUNK_TOKENS = 2048;
/** XᵀX is symmetric: only its upper triangle is multiplied, as this many horizontal bands of
 *  Xᵀ each times the columns of X from the band's first on ((1 + 1/BANDS)/2 of the flops). */
const BANDS = 8;
/** GEMM threads of the calibration pass at most (the split backend's row blocks get thin beyond). */
const MAX_COLLECTION_THREADS = 8;

export interface CollectOptions {
  backend: MatmulBackend;
  /** Inputs at most this wide get a full G; wider ones only its diagonal. */
  fullStatMaxDim?: number;
  signal?: AbortSignal;
  config?: ModelConfig;
  onLayer?(layer: number, layers: number): void;
  /** Streamed statistics: each decoder layer's, as soon as the layer has run. The pass waits
   *  for the promise, then reuses the layer's G buffers for the next layer's, so one layer's
   *  statistics are alive at a time (all 22 layers' of a 1.1B model are 7.8 GB; fresh, each
   *  layer's 350 MB also cost ~1 s of page faults here). Nothing handed on may be used after
   *  the promise settles. Without it, every layer's statistics are returned. */
  onLayerStats?(stats: InputStats, layer: number, layers: number): Promise<void>;
  /** The pass in bf16 products where the backend has them (native, AVX512-BF16): its linear
   *  layers (forward.ts's bf16Linear) and XᵀX, X rounded to bf16 — sums float32 within a
   *  chunk of tokens and float64 across chunks either way. */
  bf16Products?: boolean;
  /** Before each hand-off to onLayerStats, the pass's transient buffers give their pages back
   *  (forward.ts discardBetweenLayers; collector.ts's StreamOptions says when). */
  discardBetweenLayers?: boolean;
}

/** Adds the upper triangle of XᵀX of rows [t0, t1) of x (tokens × dim) into g (dim × dim, float64). */
async function accumulateUpper(
  backend: MatmulBackend,
  x: Float32Array,
  dim: number,
  t0: number,
  t1: number,
  g: Float64Array,
): Promise<void> {
  const n = t1 - t0;
  const xt = new Float32Array(dim * n);
  transposeInto(x, t0, n, dim, xt, n, 0);
  const bands = Math.max(1, Math.min(BANDS, dim));
  for (let b = 0; b < bands; b++) {
    const r0 = Math.floor((dim * b) / bands),
      r1 = Math.floor((dim * (b + 1)) / bands);
    const w = dim - r0;
    // X[t0:t1, r0:] (n × w), the columns this band's rows of XᵀX reach on or right of the diagonal.
    const right = new Float32Array(n * w);
    for (let t = 0; t < n; t++) right.set(x.subarray((t0 + t) * dim + r0, (t0 + t + 1) * dim), t * w);
    const held = await backend.hold(xt.subarray(r0 * n, r1 * n), r1 - r0, n);
    let prod: Float32Array;
    try {
      prod = await held.times(right, w);
    } finally {
      held.dispose();
    }
    for (let i = r0; i < r1; i++) {
      const gi = i * dim,
        pi = (i - r0) * w - r0;
      for (let j = i; j < dim; j++) g[gi + j] += prod[pi + j];
    }
  }
}

/** The calibration pass's backend: on a CPU backend each product is split over the cores (the
 *  pass is large GEMMs and nothing else runs meanwhile: one thread would leave the others
 *  idle, or native threads); a GPU backend as it is. `close` ends the GEMM threads. */
export async function createCollectionBackend(
  choice: BackendChoice,
): Promise<MatmulBackend & { close(): Promise<void> }> {
  const single = await createBackend(choice);
  const cores = os.availableParallelism?.() ?? os.cpus().length;
  // Native: the same backend with a thread per core (it splits each product itself).
  if (single.name === 'native')
    return createNativeBackend(Math.min(cores, MAX_COLLECTION_THREADS), (single as NativeBackend).isa);
  if ((single.name === 'wasm' || single.name === 'cpu') && cores > 1) {
    // Without its worker script (an unusual bundle) the pass still runs, on one thread.
    const split = await createSplitBackend(Math.min(cores, MAX_COLLECTION_THREADS), single.name).catch(() => undefined);
    if (split) return split;
  }
  return Object.assign(single, { close: async () => undefined });
}

/** g ← g·scale on and above the diagonal, mirrored below (G exactly symmetric), in tiles. */
function scaleAndMirror(g: Float64Array, dim: number, scale: number): void {
  const TILE = 32;
  for (let i0 = 0; i0 < dim; i0 += TILE)
    for (let j0 = i0; j0 < dim; j0 += TILE) {
      const i1 = Math.min(dim, i0 + TILE),
        j1 = Math.min(dim, j0 + TILE);
      for (let i = i0; i < i1; i++)
        for (let j = Math.max(i, j0); j < j1; j++) g[j * dim + i] = g[i * dim + j] = g[i * dim + j] * scale;
    }
}

function accumulateDiag(x: Float32Array, tokens: number, dim: number, d: Float64Array): void {
  for (let t = 0; t < tokens; t++) {
    const o = t * dim;
    for (let i = 0; i < dim; i++) d[i] += x[o + i] * x[o + i];
  }
}

/** A statistic whose diagonal is not finite came from activations that overflowed in the model
 *  (a config.json value such as rope_scaling, or a weight): refused naming the checkpoint, as
 *  eval refuses its logits, rather than later as unusable statistics of the token file. */
function requireFiniteStat(ck: Checkpoint, c: ModelConfig, names: readonly string[], stat: InputStat): void {
  for (let i = 0; i < stat.dim; i++) {
    const v = stat.kind === 'full' ? stat.g[i * stat.dim + i] : stat.d[i];
    if (!Number.isFinite(v)) {
      const config = path.basename(c.file);
      const why = `a ${config} value (rope_theta, rope_scaling, rms_norm_eps, …) or a weight is implausible`;
      throw new InputError(ck.path, `the mean x² of ${names[0]}'s input is ${v} in column ${i}: ${why}`);
    }
  }
}

/** Σ_t ‖y_t‖² / count of each linear layer's outputs, on the full statistic of its input
 *  (InputStat.outputSquares), summed in float64 in token order. */
function recordOutputSquares(
  layerStats: InputStats,
  names: readonly string[],
  y: Float32Array,
  tokens: number,
  widths: readonly number[],
): void {
  const total = widths.reduce((a, b) => a + b, 0);
  let c0 = 0;
  names.forEach((name, k) => {
    const stat = layerStats.get(name);
    const c1 = c0 + widths[k];
    if (stat?.kind === 'full') {
      let sum = 0;
      for (let t = 0; t < tokens; t++) {
        let row = 0;
        for (let o = t * total + c0, end = t * total + c1; o < end; o++) row += y[o] * y[o];
        sum += row;
      }
      (stat.outputSquares ??= {})[name] = sum / stat.count;
    }
    c0 = c1;
  });
}

export interface CollectResult {
  stats: InputStats;
  forward: ForwardResult;
}

/** Runs the original model over `sequences` and returns G per linear weight name (none when
 *  they were handed on layer by layer: onLayerStats). */
export async function collectInputStatsWithInfo(
  ck: Checkpoint,
  sequences: readonly (readonly number[])[],
  opts: CollectOptions,
): Promise<CollectResult> {
  const c = opts.config ?? (await readModelConfig(ck.folder));
  const maxFull = opts.fullStatMaxDim ?? DEFAULT_FULL_STAT_MAX_DIM;
  const stats: InputStats = new Map();
  let layerStats: InputStats = new Map();
  const spareG = new Map<number, Float64Array[]>();
  // Shared memory: G reaches the matrix jobs' threads without a copy (a structured clone of
  // a 5632-wide G was 254 MB copied per layer).
  const newG = (dim: number): Float64Array => {
    const g = spareG.get(dim)?.pop();
    return g ? g.fill(0) : new Float64Array(new SharedArrayBuffer(dim * dim * 8));
  };
  const native = opts.backend instanceof NativeBackend ? opts.backend : undefined;
  const bf16 = opts.bf16Products === true && native?.bf16 === true;
  const forward = await runForward(ck, c, sequences, {
    backend: opts.backend,
    signal: opts.signal,
    bf16Linear: bf16,
    discardBetweenLayers: opts.discardBetweenLayers === true,
    onLayer: async (layer, layers) => {
      opts.onLayer?.(layer, layers);
      if (opts.onLayerStats) {
        await opts.onLayerStats(layerStats, layer, layers);
        for (const stat of new Set(layerStats.values()))
          if (stat.kind === 'full') spareG.set(stat.dim, [...(spareG.get(stat.dim) ?? []), stat.g]);
      } else for (const [name, stat] of layerStats) stats.set(name, stat);
      layerStats = new Map();
    },
    hooks: {
      onInput: async (names, x, tokens, dim) => {
        let stat: InputStat;
        if (dim <= maxFull) {
          const g = newG(dim);
          for (let t0 = 0; t0 < tokens; t0 += CHUNK_TOKENS) {
            await yieldAndCheck(opts.signal);
            const t1 = Math.min(tokens, t0 + CHUNK_TOKENS);
            // Native: the same bands and sums in the module, off the JavaScript loops.
            if (native) native.gramUpper(x, dim, t0, t1, g, bf16);
            else await accumulateUpper(opts.backend, x, dim, t0, t1, g);
          }
          if (native) native.symmetrizeScaled(g, dim, 1 / tokens);
          else scaleAndMirror(g, dim, 1 / tokens);
          stat = { kind: 'full', dim, count: tokens, g };
        } else {
          const d = new Float64Array(dim);
          accumulateDiag(x, tokens, dim, d);
          for (let i = 0; i < dim; i++) d[i] /= tokens;
          stat = { kind: 'diag', dim, count: tokens, d };
        }
        requireFiniteStat(ck, c, names, stat);
        for (const n of names) layerStats.set(n, stat);
      },
      onOutput: (names, y, tokens, widths) => recordOutputSquares(layerStats, names, y, tokens, widths),
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
