// Calibration tokens sampled from the original model, for users without data
// (`--calib-generate N,LEN`). Sampling, documented so a run can be reproduced:
//  - every sequence starts from the BOS token (config.json bos_token_id, default 1) and has LEN
//    tokens in all, BOS included;
//  - each next token is drawn from softmax(logits) at temperature 1 (no top-k/top-p), by inverse
//    CDF on one uniform number from mulberry32(seed), consumed sequence by sequence per step.
// Identical seeds give identical tokens on one backend; another backend's float32 rounding can
// flip a draw that falls on a CDF boundary.
//
// Each family's layer (arch/) as forward.ts runs it. Decoding is incremental: the N sequences
// advance one position per step with a key/value cache per layer, so a step costs one token's
// work per sequence (the layer-streaming forward of forward.ts would redo the whole prefix).
// Layer weights are held on the backend between steps while they fit LAYER_CACHE_BYTES, and
// streamed from the checkpoint again each step otherwise.

import type { Checkpoint } from '../checkpoint/checkpoint';
import { yieldAndCheck } from '../base/errors';
import { CheckpointError } from '../checkpoint/errors';
import type { DeviceMatrix, MatmulBackend } from '../linalg/backend';
import type { ModelConfig } from './config';
import { activate, finishLogits, headTensorName, normInto, readHeadBias, scaleInPlace } from './forward';
import { applyRope, softcapRange } from './ops';
import { ropeForDecoding } from './rope';
import { LayerWeights, readChecked, readLayer, readNorm } from './weights';

export const LAYER_CACHE_BYTES = 2 ** 30;

export interface GenerateOptions {
  sequences: number;
  length: number;
  seed: number;
  backend: MatmulBackend;
  signal?: AbortSignal;
  /** Sees each step's logits (sequences × vocab) before the draw; for tests. */
  onLogits?(position: number, logits: Float32Array): void;
  onStep?(step: number, steps: number): void;
}

/** mulberry32: a small, fast 32-bit PRNG; uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Inverse-CDF draw from softmax(row) (float64 sums). */
export function sampleSoftmax(row: Float32Array, u: number): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i] > max) max = row[i];
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);
  let acc = 0;
  const target = u * sum;
  for (let i = 0; i < row.length; i++) {
    acc += Math.exp(row[i] - max);
    if (acc > target) return i;
  }
  return row.length - 1;
}

/** One query row per sequence against that sequence's cached keys/values (positions 0..pos, or
 *  the last `window` of them). */
function cachedAttention(
  c: ModelConfig,
  window: number | undefined,
  qkv: Float32Array,
  stride: number,
  kCache: Float32Array,
  vCache: Float32Array,
  n: number,
  maxLen: number,
  pos: number,
  out: Float32Array,
): void {
  const d = c.headDim,
    kvDim = c.numKvHeads * d,
    group = c.numHeads / c.numKvHeads,
    scale = c.attnScale,
    cap = c.attnSoftcap;
  const j0 = window ? Math.max(0, pos - window + 1) : 0;
  const scores = new Float64Array(pos + 1),
    acc = new Float64Array(d);
  for (let s = 0; s < n; s++) {
    const base = s * maxLen * kvDim;
    for (let h = 0; h < c.numHeads; h++) {
      const qo = s * stride + h * d,
        kvo = Math.floor(h / group) * d;
      let max = -Infinity;
      for (let j = j0; j <= pos; j++) {
        const ko = base + j * kvDim + kvo;
        let dot = 0;
        for (let e = 0; e < d; e++) dot += qkv[qo + e] * kCache[ko + e];
        scores[j] = dot * scale;
        if (scores[j] > max) max = scores[j];
      }
      if (cap !== undefined) max = softcapRange(scores, j0, pos + 1, cap);
      let sum = 0;
      for (let j = j0; j <= pos; j++) sum += scores[j] = Math.exp(scores[j] - max);
      acc.fill(0);
      for (let j = j0; j <= pos; j++) {
        const p = scores[j] / sum,
          vo = base + j * kvDim + kvo;
        for (let e = 0; e < d; e++) acc[e] += p * vCache[vo + e];
      }
      const oo = s * c.numHeads * d + h * d;
      for (let e = 0; e < d; e++) out[oo + e] = acc[e];
    }
  }
}

/** One decoder layer with its linear weights held on the backend as [out, in] (rows of q|k|v and
 *  gate|up stacked: row-major concatenation — a fused weight is its own stack), so a step
 *  multiplies them by the few new rows without transposing or uploading a weight again. */
interface HeldLayer {
  w: LayerWeights;
  qkv: DeviceMatrix;
  qkvBias?: Float32Array;
  o: DeviceMatrix;
  up: DeviceMatrix;
  upBias?: Float32Array;
  down: DeviceMatrix;
  dispose(): void;
}

function stack(parts: readonly Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0];
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** The biases of stacked weights side by side (zeros where one has none); undefined if none has. */
function stackBiases(biases: readonly (Float32Array | undefined)[], rows: readonly number[]): Float32Array | undefined {
  if (!biases.some((b) => b)) return undefined;
  return stack(biases.map((b, k) => b ?? new Float32Array(rows[k])));
}

async function holdLayer(backend: MatmulBackend, c: ModelConfig, w: LayerWeights): Promise<HeldLayer> {
  const L = c.layout;
  const mats: DeviceMatrix[] = [];
  const hold = async (a: Float32Array, rows: number, cols: number) => {
    const m = await backend.hold(a, rows, cols);
    mats.push(m);
    return m;
  };
  const rows = (specs: readonly { rows: number }[]) => specs.map((s) => s.rows);
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  try {
    return {
      w,
      qkv: await hold(stack(w.qkv), sum(rows(L.qkv)), c.hiddenSize),
      qkvBias: stackBiases(w.qkvBias, rows(L.qkv)),
      o: await hold(w.o, L.o.rows, L.o.cols),
      up: await hold(stack(w.up), sum(rows(L.up)), c.hiddenSize),
      upBias: stackBiases(w.upBias, rows(L.up)),
      down: await hold(w.down, L.down.rows, L.down.cols),
      dispose: () => {
        for (const m of mats) m.dispose();
      },
    };
  } catch (e) {
    for (const m of mats) m.dispose();
    throw e;
  }
}

/** x (n × in, row-major) through a held W (out × in): x·Wᵀ (+ bias), n × out. */
async function throughHeld(w: DeviceMatrix, x: Float32Array, n: number, bias?: Float32Array): Promise<Float32Array> {
  const inDim = w.cols,
    out = w.rows;
  const xt = new Float32Array(inDim * n);
  for (let s = 0; s < n; s++) for (let i = 0; i < inDim; i++) xt[i * n + s] = x[s * inDim + i];
  const yt = await w.times(xt, n); // out × n
  const y = new Float32Array(n * out);
  for (let j = 0; j < out; j++) {
    const b = bias ? bias[j] : 0;
    for (let s = 0; s < n; s++) y[s * out + j] = yt[j * n + s] + b;
  }
  return y;
}

/** Samples `sequences` sequences of `length` tokens from the model (see the header). */
export async function generateSequences(ck: Checkpoint, c: ModelConfig, opts: GenerateOptions): Promise<number[][]> {
  const { sequences: n, length, backend, signal } = opts;
  if (c.bosTokenId >= c.vocabSize) {
    const why = `field 'bos_token_id' (${c.bosTokenId}) is outside the vocabulary (0..${c.vocabSize - 1}, vocab_size)`;
    throw new CheckpointError('metadata', c.file, `${why}: sampling has no token to start from`);
  }
  const H = c.hiddenSize,
    qDim = c.numHeads * c.headDim,
    kvDim = c.numKvHeads * c.headDim,
    I = c.intermediateSize,
    L = c.layout;
  const stride = qDim + 2 * kvDim;
  const rng = mulberry32(opts.seed);
  const seqs = Array.from({ length: n }, () => [c.bosTokenId]);
  const embedTable = await readChecked(ck, c, `${c.tensors.embed}.weight`, [c.vocabSize, H]);
  const finalNorm = await readNorm(ck, c, c.tensors.finalNorm);
  const headName = headTensorName(ck, c);
  const tied = headName === `${c.tensors.embed}.weight`;
  const head = tied ? embedTable : await readChecked(ck, c, headName, [c.vocabSize, H]);
  const headBias = await readHeadBias(ck, c);
  const rope = ropeForDecoding(c.rope, length);
  const kCache = Array.from({ length: c.numLayers }, () => new Float32Array(n * length * kvDim));
  const vCache = Array.from({ length: c.numLayers }, () => new Float32Array(n * length * kvDim));
  const upRows = L.up.reduce((a, s) => a + s.rows, 0);
  const layerBytes = (2 * H * qDim + 2 * H * kvDim + (upRows + I) * H) * 4;
  const held: (HeldLayer | undefined)[] = [];
  const keepLayers = layerBytes * c.numLayers <= LAYER_CACHE_BYTES;
  const h = new Float32Array(n * H),
    normed = new Float32Array(n * H);
  const att = new Float32Array(n * qDim),
    act = new Float32Array(n * I);
  const heldHead = await backend.hold(head, c.vocabSize, H);
  try {
    for (let pos = 0; pos < length - 1; pos++) {
      for (let s = 0; s < n; s++) h.set(embedTable.subarray(seqs[s][pos] * H, (seqs[s][pos] + 1) * H), s * H);
      // Scaled in h, a copy: the table stays as the checkpoint has it (a tied head reads it).
      if (c.embedScale !== undefined) scaleInPlace(h, c.embedScale);
      const positions = new Int32Array(n).fill(pos);
      for (let l = 0; l < c.numLayers; l++) {
        await yieldAndCheck(signal);
        const hl = held[l] ?? (await holdLayer(backend, c, await readLayer(ck, c, l)));
        if (keepLayers) held[l] = hl;
        const w = hl.w;
        try {
          normInto(c, h, n, w.inputNorm, w.inputNormBias, normed);
          const qkv = await throughHeld(hl.qkv, normed, n, hl.qkvBias);
          applyRope(qkv, stride, 0, c.numHeads, c.headDim, positions, rope);
          applyRope(qkv, stride, qDim, c.numKvHeads, c.headDim, positions, rope);
          for (let s = 0; s < n; s++) {
            const o = (s * length + pos) * kvDim;
            kCache[l].set(qkv.subarray(s * stride + qDim, s * stride + qDim + kvDim), o);
            vCache[l].set(qkv.subarray(s * stride + qDim + kvDim, (s + 1) * stride), o);
          }
          cachedAttention(c, c.windows[l], qkv, stride, kCache[l], vCache[l], n, length, pos, att);
          const o = await throughHeld(hl.o, att, n, w.oBias);
          if (L.block !== 'parallel') {
            if (L.block === 'sandwich') normInto(c, o, n, w.postAttentionNorm!, undefined, o);
            for (let i = 0; i < h.length; i++) h[i] += o[i];
            normInto(c, h, n, L.block === 'sandwich' ? w.preFeedforwardNorm! : w.postAttentionNorm!, undefined, normed);
          }
          activate(c, await throughHeld(hl.up, normed, n, hl.upBias), n, act);
          const down = await throughHeld(hl.down, act, n, w.downBias);
          if (L.block === 'sandwich') normInto(c, down, n, w.postFeedforwardNorm!, undefined, down);
          if (L.block === 'parallel') for (let i = 0; i < h.length; i++) h[i] += Math.fround(o[i] + down[i]);
          else for (let i = 0; i < h.length; i++) h[i] += down[i];
        } finally {
          if (!keepLayers) hl.dispose();
        }
      }
      normInto(c, h, n, finalNorm.w, finalNorm.b, normed);
      const xt = new Float32Array(H * n);
      for (let s = 0; s < n; s++) for (let e = 0; e < H; e++) xt[e * n + s] = normed[s * H + e];
      const vt = await heldHead.times(xt, n); // vocab × n
      const logits = new Float32Array(n * c.vocabSize);
      for (let v = 0; v < c.vocabSize; v++) for (let s = 0; s < n; s++) logits[s * c.vocabSize + v] = vt[v * n + s];
      finishLogits(c, logits, n, headBias);
      opts.onLogits?.(pos, logits);
      for (let s = 0; s < n; s++) {
        seqs[s].push(sampleSoftmax(logits.subarray(s * c.vocabSize, (s + 1) * c.vocabSize), rng()));
      }
      opts.onStep?.(pos + 1, length - 1);
    }
  } finally {
    heldHead.dispose();
    for (const w of held) w?.dispose();
  }
  return seqs;
}
