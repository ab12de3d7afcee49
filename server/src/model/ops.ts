// The element-wise and per-token parts of a Llama decoder layer, in Hugging Face conventions
// (RMSNorm in float64 sums, rotate_half RoPE, causal softmax attention with GQA, SiLU-gated
// MLP). The matrix products live in linear.ts on the tfjs backend; these are cheap next to them.

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

/** cos/sin tables [position, headDim/2] for positions 0..maxLen-1: inv_freq_j = θ^(−2j/d). */
export function ropeTables(maxLen: number, headDim: number, theta: number): { cos: Float64Array; sin: Float64Array } {
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
  return { cos, sin };
}

/** In place on rows of `heads` heads: x·cos + rotate_half(x)·sin, rotate_half(x) = (−x₂, x₁). */
export function applyRope(
  x: Float32Array,
  rowStride: number,
  colOffset: number,
  heads: number,
  headDim: number,
  positions: Int32Array,
  tables: { cos: Float64Array; sin: Float64Array },
): void {
  const half = headDim / 2;
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

/** Heads, head size and where q, k, v sit in a row of qkv (the type lives with the native
 *  backend, which runs the same attention and may not import model/). */
export type AttentionShape = AttentionLayout;

/** Causal attention of one sequence (rows start..start+len of qkv) into out (len rows × heads·headDim). */
export function attention(
  qkv: Float32Array,
  start: number,
  len: number,
  s: AttentionShape,
  out: Float32Array,
  outRow0: number,
): void {
  const { heads, kvHeads, headDim: d, stride } = s;
  const group = heads / kvHeads;
  const scale = 1 / Math.sqrt(d);
  const scores = new Float64Array(len);
  const acc = new Float64Array(d);
  const width = heads * d;
  for (let h = 0; h < heads; h++) {
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
