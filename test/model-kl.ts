// Test-only model-level fidelity: mean KL(original ‖ LoftQ init) in nats per position on given
// token sequences, where the LoftQ init is read back from a quantize run's files on disk — the
// backbone Q from OUT/model.safetensors plus (α/r)·B·A from OUT/loftq_init (rank and alpha from
// adapter_config.json, rank_pattern/alpha_pattern honoured) — and run through the engine's
// forward pass with those weights substituted. (`loftq eval` is the product's version of this.)

import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint, readTensorF32 } from '../server/src/checkpoint';
import type { MatmulBackend } from '../server/src/linalg/backend';
import { readModelConfig } from '../server/src/model/config';
import { runForward } from '../server/src/model/forward';

/** log-softmax rows (float64) of every position, sequence by sequence. */
async function logProbs(
  dir: string,
  seqs: readonly (readonly number[])[],
  backend: MatmulBackend,
  hook?: (name: string, w: Float32Array, rows: number, cols: number) => Promise<Float32Array | undefined>,
): Promise<Float64Array[]> {
  const ck = await openCheckpoint(dir);
  const c = await readModelConfig(dir);
  const out: Float64Array[] = [];
  await runForward(ck, c, seqs, {
    backend,
    hooks: hook ? { weight: hook } : undefined,
    onLogits: (_k, logits, len, vocab) => {
      const lp = new Float64Array(len * vocab);
      for (let i = 0; i < len; i++) {
        let max = -Infinity;
        for (let v = 0; v < vocab; v++) max = Math.max(max, logits[i * vocab + v]);
        let s = 0;
        for (let v = 0; v < vocab; v++) s += Math.exp(logits[i * vocab + v] - max);
        const lse = max + Math.log(s);
        for (let v = 0; v < vocab; v++) lp[i * vocab + v] = logits[i * vocab + v] - lse;
      }
      out.push(lp);
    },
  });
  return out;
}

/** The weight Q + (α/r)·B·A of each adapted module of a quantize output folder. */
async function loftqWeights(
  out: string,
): Promise<(name: string, w: Float32Array, rows: number, cols: number) => Promise<Float32Array | undefined>> {
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'loftq_init', 'adapter_config.json'), 'utf8'));
  const backbone = await openCheckpoint(path.join(out, 'model.safetensors'));
  const adapters = await openCheckpoint(path.join(out, 'loftq_init', 'adapter_model.safetensors'));
  const pattern = (p: Record<string, number>, mod: string, dflt: number) => {
    for (const [k, v] of Object.entries(p ?? {})) if (new RegExp(`(^|\\.)${k}$`).test(mod)) return v;
    return dflt;
  };
  return async (name, _w, rows, cols) => {
    const mod = name.replace(/\.weight$/, '');
    const a = adapters.byName.get(`base_model.model.${mod}.lora_A.weight`);
    const q = await readTensorF32(backbone.byName.get(name)!);
    if (!a) return q;
    const r = a.shape[0];
    const A = await readTensorF32(a),
      B = await readTensorF32(adapters.byName.get(`base_model.model.${mod}.lora_B.weight`)!);
    const scale = pattern(cfg.alpha_pattern, mod, cfg.lora_alpha) / pattern(cfg.rank_pattern, mod, cfg.r);
    const w = new Float32Array(rows * cols);
    for (let i = 0; i < rows; i++)
      for (let j = 0; j < cols; j++) {
        let s = 0;
        for (let p = 0; p < r; p++) s += B[i * r + p] * A[p * cols + j];
        w[i * cols + j] = q[i * cols + j] + scale * s;
      }
    return w;
  };
}

/** Mean KL(original ‖ init of OUT) over every position of `seqs`, in nats. */
export async function meanKl(
  original: string,
  out: string,
  seqs: readonly (readonly number[])[],
  backend: MatmulBackend,
): Promise<number> {
  const p = await logProbs(original, seqs, backend);
  const q = await logProbs(original, seqs, backend, await loftqWeights(out));
  let kl = 0,
    n = 0;
  for (let k = 0; k < p.length; k++) {
    const vocab = p[k].length / seqs[k].length;
    for (let i = 0; i < seqs[k].length; i++) {
      let s = 0;
      for (let v = 0; v < vocab; v++) {
        const lp = p[k][i * vocab + v];
        s += Math.exp(lp) * (lp - q[k][i * vocab + v]);
      }
      kl += Math.max(0, s);
      n++;
    }
  }
  return kl / n;
}
