// The element-wise and per-token parts of a decoder layer, in Hugging Face conventions
// (RMSNorm and LayerNorm in float64 sums, rotate_half RoPE on the rotary part of each head,
// causal softmax attention with GQA, an optional sliding window, scale and soft-capping,
// SiLU- and GELU-gated or plain GELU MLPs). The matrix products live in linear.ts; these are
// cheap next to them. Each function has one kind of work: the branches are per call (per
// layer), never per element.

import type { AttentionLayout } from '../linalg/nativeBackend';

/** out[t] = x[t] / sqrt(mean(x[t]²) + eps) · w, row by row (HF computes the variance in float32;
 *  float64 here only moves the last bits). */
export function rmsNorm(
  x: Float32Array,
  tokens: number,
  dim: number,
  w: Float32Array,
  eps: number,
  out: Float32Array,
): void {
  for (let t = 0; t < tokens; t++) {
    const o = t * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[o + i] * x[o + i];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[o + i] = x[o + i] * inv * w[i];
  }
}

/** out[t] = (x[t] − mean) / sqrt(var + eps) · w + b, row by row (torch's LayerNorm: biased variance). */
export function layerNorm(
  x: Float32Array,
  tokens: number,
  dim: number,
  w: Float32Array,
  b: Float32Array,
  eps: number,
  out: Float32Array,
): void {
  for (let t = 0; t < tokens; t++) {
    const o = t * dim;
    let s = 0;
    for (let i = 0; i < dim; i++) s += x[o + i];
    const mean = s / dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) {
      const d = x[o + i] - mean;
      ss += d * d;
    }
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[o + i] = (x[o + i] - mean) * inv * w[i] + b[i];
  }
}

/** cos/sin tables [position, headDim/2] for positions 0..maxLen-1: inv_freq_j = θ^(−2j/d)
 *  (rope.ts has the scaled forms; this is its 'default'). */
export function ropeTables(
  maxLen: number,
  headDim: number,
  theta: number,
): { cos: Float64Array; sin: Float64Array; half: number } {
  const half = headDim / 2;
  const cos = new Float64Array(maxLen * half),
    sin = new Float64Array(maxLen * half);
  for (let j = 0; j < half; j++) {
    // HF computes inv_freq in float32 (torch.arange(0, d, 2).float() / d): round it the same way.
    const invFreq = Math.fround(1 / Math.pow(theta, Math.fround((2 * j) / headDim)));
    for (let p = 0; p < maxLen; p++) {
      const a = Math.fround(p * invFreq);
      cos[p * half + j] = Math.cos(a);
      sin[p * half + j] = Math.sin(a);
    }
  }
  return { cos, sin, half };
}

/** In place on rows of `heads` heads: x·cos + rotate_half(x)·sin, rotate_half(x) = (−x₂, x₁), on
 *  the first 2·tables.half dimensions of each head (all of it unless the rotary is partial);
 *  token t reads the tables' row positions[t]. */
export function applyRope(
  x: Float32Array,
  rowStride: number,
  colOffset: number,
  heads: number,
  headDim: number,
  positions: Int32Array,
  tables: { cos: Float64Array; sin: Float64Array; half?: number },
): void {
  const half = tables.half ?? headDim / 2;
  for (let t = 0; t < positions.length; t++) {
    const tb = positions[t] * half;
    for (let h = 0; h < heads; h++) {
      const o = t * rowStride + colOffset + h * headDim;
      for (let j = 0; j < half; j++) {
        const c = tables.cos[tb + j],
          s = tables.sin[tb + j];
        const a = x[o + j],
          b = x[o + j + half];
        x[o + j] = a * c - b * s;
        x[o + j + half] = b * c + a * s;
      }
    }
  }
}

/** Heads, head size and where q, k, v sit in a row of qkv (the layout type lives with the
 *  native backend, which runs the same attention and may not import model/), and the scores'
 *  scale (default 1/√headDim) and soft-cap (cap·tanh(s/cap), Gemma 2), which only this one runs. */
export interface AttentionShape extends AttentionLayout {
  scale?: number;
  softcap?: number;
}

/** Causal attention of one sequence (rows start..start+len of qkv) into out (len rows × heads·headDim). */
export function attention(
  qkv: Float32Array,
  start: number,
  len: number,
  s: AttentionShape,
  out: Float32Array,
  outRow0: number,
  /** Only heads [h0, h1) (a caller that yields between heads of a long sequence). */
  h0 = 0,
  h1 = s.heads,
): void {
  const { heads, kvHeads, headDim: d, stride } = s;
  const group = heads / kvHeads;
  const scale = s.scale ?? 1 / Math.sqrt(d);
  const cap = s.softcap;
  const scores = new Float64Array(len);
  const acc = new Float64Array(d);
  const width = heads * d;
  for (let h = h0; h < h1; h++) {
    const kvh = Math.floor(h / group);
    const qo = s.qOff + h * d,
      ko = s.kOff + kvh * d,
      vo = s.vOff + kvh * d;
    for (let i = 0; i < len; i++) {
      const qi = (start + i) * stride + qo;
      const j0 = s.slidingWindow ? Math.max(0, i - s.slidingWindow + 1) : 0;
      let max = -Infinity;
      for (let j = j0; j <= i; j++) {
        const kj = (start + j) * stride + ko;
        let dot = 0;
        for (let e = 0; e < d; e++) dot += qkv[qi + e] * qkv[kj + e];
        const v = dot * scale;
        scores[j] = v;
        if (v > max) max = v;
      }
      if (cap !== undefined) max = softcapRange(scores, j0, i + 1, cap);
      let sum = 0;
      for (let j = j0; j <= i; j++) sum += scores[j] = Math.exp(scores[j] - max);
      acc.fill(0);
      for (let j = j0; j <= i; j++) {
        const p = scores[j] / sum;
        const vj = (start + j) * stride + vo;
        for (let e = 0; e < d; e++) acc[e] += p * qkv[vj + e];
      }
      const oo = (outRow0 + i) * width + h * d;
      for (let e = 0; e < d; e++) out[oo + e] = acc[e];
    }
  }
}

/** gu holds [gate | up] per row (width 2·inter); writes silu(gate)·up into out (rows × inter). */
export function siluGate(gu: Float32Array, tokens: number, inter: number, out: Float32Array): void {
  for (let t = 0; t < tokens; t++) {
    const o = t * 2 * inter;
    for (let i = 0; i < inter; i++) {
      const g = gu[o + i];
      out[t * inter + i] = (g / (1 + Math.exp(-g))) * gu[o + inter + i];
    }
  }
}

/** scores[j0..j1) ← cap·tanh(scores/cap); returns their maximum. */
export function softcapRange(scores: Float64Array, j0: number, j1: number, cap: number): number {
  let max = -Infinity;
  for (let j = j0; j < j1; j++) {
    const v = cap * Math.tanh(scores[j] / cap);
    scores[j] = v;
    if (v > max) max = v;
  }
  return max;
}

/** x ← cap·tanh(x/cap), element-wise (Gemma 2's final logits). */
export function softcapInPlace(x: Float32Array, cap: number): void {
  for (let i = 0; i < x.length; i++) x[i] = cap * Math.tanh(x[i] / cap);
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/** transformers' gelu_pytorch_tanh / gelu_new: ½x(1 + tanh(√(2/π)(x + 0.044715x³))). */
function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)));
}

/** erf in float64: its Taylor series below |x| = 3 (cancellation costs ~4 digits there), erfc's
 *  continued fraction beyond — both far below float32 resolution, which is what the GELU's
 *  output keeps. */
function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 3) {
    // erf(x) = 2/√π · Σ (−1)ⁿ x^(2n+1) / (n! (2n+1))
    let term = ax,
      sum = ax;
    const x2 = ax * ax;
    for (let n = 1; n < 100; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    const r = (2 / Math.sqrt(Math.PI)) * sum;
    return x < 0 ? -r : r;
  }
  // erfc(x) = exp(−x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …)))), evaluated backwards.
  let f = ax;
  for (let n = 60; n >= 1; n--) f = ax + n / 2 / f;
  const r = 1 - Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return x < 0 ? -r : r;
}

/** torch's exact GELU: ½x(1 + erf(x/√2)). */
function geluErf(x: number): number {
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}

/** gu holds [gate | up] per row (width 2·inter); writes gelu_tanh(gate)·up into out (GeGLU). */
export function geluTanhGate(gu: Float32Array, tokens: number, inter: number, out: Float32Array): void {
  for (let t = 0; t < tokens; t++) {
    const o = t * 2 * inter;
    for (let i = 0; i < inter; i++) out[t * inter + i] = geluTanh(gu[o + i]) * gu[o + inter + i];
  }
}

/** As geluTanhGate with the exact GELU. */
export function geluGate(gu: Float32Array, tokens: number, inter: number, out: Float32Array): void {
  for (let t = 0; t < tokens; t++) {
    const o = t * 2 * inter;
    for (let i = 0; i < inter; i++) out[t * inter + i] = geluErf(gu[o + i]) * gu[o + inter + i];
  }
}

/** out = gelu_tanh(x) element-wise over the first n values (Phi-2's fc1 → fc2). */
export function geluTanhInto(x: Float32Array, n: number, out: Float32Array): void {
  for (let i = 0; i < n; i++) out[i] = geluTanh(x[i]);
}

/** out = gelu(x), the exact GELU, over the first n values. */
export function geluInto(x: Float32Array, n: number, out: Float32Array): void {
  for (let i = 0; i < n; i++) out[i] = geluErf(x[i]);
}

/** out = silu(x) over the first n values (a plain, not gated, SiLU MLP). */
export function siluInto(x: Float32Array, n: number, out: Float32Array): void {
  for (let i = 0; i < n; i++) out[i] = x[i] / (1 + Math.exp(-x[i]));
}
