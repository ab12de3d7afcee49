// A generated analysis report with a known structure, for tests and the benchmark: a
// Llama-shaped stack whose layers differ in sensitivity. Per matrix, the quantization error
// at b bits is sensitivity · ‖W‖² · 0.19 · 4^{−(b−2)} (roughly NF's decay per bit), and the
// residual's singular values decay geometrically (ratio `decay`), so rank helps less as
// it grows. No weights involved — only the numbers an analysis report carries.

import type { AnalysisEntry, Report } from '../server/src/protocol/lsp_ext';
import { QUANTIZERS } from '../server/src/registry';

export interface SyntheticOptions {
  layers: number;
  /** [out, in] per module name. */
  modules?: Record<string, [number, number]>;
  bits?: number[];
  rank?: number;
  /** Relative sensitivity of layer l (default: the first and last layers matter most). */
  sensitivity?: (layer: number, layers: number) => number;
  decay?: number;
  /** Deterministic per-matrix jitter seed. */
  seed?: number;
}

export const LLAMA7B_MODULES: Record<string, [number, number]> = {
  'self_attn.q_proj': [4096, 4096],
  'self_attn.k_proj': [4096, 4096],
  'self_attn.v_proj': [4096, 4096],
  'self_attn.o_proj': [4096, 4096],
  'mlp.gate_proj': [11008, 4096],
  'mlp.up_proj': [11008, 4096],
  'mlp.down_proj': [4096, 11008],
};

function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

export function syntheticReport(o: SyntheticOptions): Report {
  const modules = o.modules ?? LLAMA7B_MODULES;
  const bits = o.bits ?? [...QUANTIZERS.nf.bits];
  const rank = o.rank ?? 64;
  const decay = o.decay ?? 0.97;
  const sens = o.sensitivity ?? ((l, n) => 1 + 3 * Math.exp(-l) + 1.5 * Math.exp(l - (n - 1)));
  const rand = rng(o.seed ?? 7);
  const rows: { name: string; shape: [number, number]; norm: number; s: number; spread: number }[] = [];
  for (let l = 0; l < o.layers; l++)
    for (const [m, shape] of Object.entries(modules)) {
      const name = `model.layers.${l}.${m}.weight`;
      rows.push({
        name,
        shape,
        norm: Math.sqrt(shape[0] * shape[1]) * 0.02 * (0.8 + 0.4 * rand()),
        s: sens(l, o.layers) * (0.7 + 0.6 * rand()),
        spread: 0.15 + 0.2 * rand(),
      });
    }
  const analyses: AnalysisEntry[] = bits.map((b) => ({
    bits: b,
    rank,
    iters: 5,
    quantizer: 'nf',
    blockSize: 64,
    matrices: rows.map((r) => {
      const quant = Math.min(0.9, r.s * 0.19 * 4 ** -(b - 2)) * r.norm ** 2;
      // the top `rank` directions hold a `spread` share of the residual energy, decaying geometrically
      const weights = Array.from({ length: rank }, (_, i) => decay ** i);
      const wsum = weights.reduce((x, y) => x + y, 0);
      const spectrum = weights.map((w) => Math.sqrt((quant * r.spread * w) / wsum));
      const rest = quant * (1 - r.spread);
      return {
        name: r.name,
        shape: r.shape,
        relError: Math.sqrt(rest) / r.norm,
        qloraRelError: Math.sqrt(quant) / r.norm,
        frobeniusNorm: r.norm,
        residualSpectrum: spectrum,
      };
    }),
  }));
  return {
    version: 1,
    tool: 'synthetic',
    checkpoint: 'synthetic',
    backend: 'cpu',
    settings: { bits: bits[0], rank, iters: 5, quantizer: 'nf', blockSize: 64 },
    matrices: [],
    totals: {
      matrices: rows.length,
      parameters: rows.reduce((s, r) => s + r.shape[0] * r.shape[1], 0),
      seconds: 0,
      backboneBytes: 0,
      adapterBytes: 0,
    },
    analyses,
  };
}
