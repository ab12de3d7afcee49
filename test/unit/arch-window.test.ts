// Sliding windows shorter than the sequence, and every family's layer, against an independent
// float64 forward written here from transformers' modeling code (Mistral/Qwen2/Phi-3: the window on
// every layer; Gemma 2: on layers 0, 2, …, with soft-capping, query_pre_attn_scalar and its four
// norms; Phi-2: parallel attention ∥ MLP, LayerNorm, partial rotary, biases; Gemma: (1 + w) norms,
// GeGLU, √hidden embeddings), token by token, sharing nothing with server/src/model/. On tiny
// checkpoints written here: the forward pass (eval, calibration), KV-cached generation
// (--calib-generate) and the calibration statistics — one G per fused Phi-3 matrix, one G for
// Phi-2's q/k/v/fc1 — all agree with it.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint } from '../../server/src/checkpoint';
import { createBackend } from '../../server/src/linalg/backend';
import { nativeAddon } from '../../server/src/linalg/nativeBackend';
import { collectInputStats } from '../../server/src/model/collect';
import { readModelConfig } from '../../server/src/model/config';
import { runForward } from '../../server/src/model/forward';
import { generateSequences } from '../../server/src/model/generate';
import type { BackendChoice } from '../../server/src/registry';
import { loadAll, randomWeights, writeCheckpoint } from '../model-reference';
import { tempDir } from '../helpers';

// ---------------------------------------------------------------------------------------------
// The reference: float64 throughout, one token at a time.

type Cfg = Record<string, any>;
type Tensors = Map<string, Float64Array>;

function matvec(w: Float64Array, x: Float64Array, rows: number, b?: Float64Array): Float64Array {
  const n = x.length,
    y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = b ? b[r] : 0;
    for (let i = 0; i < n; i++) s += w[r * n + i] * x[i];
    y[r] = s;
  }
  return y;
}

const geluTanh = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
const silu = (x: number) => x / (1 + Math.exp(-x));
const cap = (x: number, c: number | undefined | null) => (c ? c * Math.tanh(x / c) : x);

/** transformers' sliding-window rule (Mistral's mask, Gemma 2's decoder layer): position i sees
 *  j with i − window < j ≤ i. */
function windowOf(cfg: Cfg, layer: number): number | undefined {
  const mt = cfg.model_type,
    w = cfg.sliding_window ?? undefined;
  if (mt === 'mistral' || mt === 'phi3') return w;
  if (mt === 'qwen2') return cfg.use_sliding_window ? w : undefined;
  if (mt === 'gemma2') return layer % 2 === 0 ? w : undefined; // Gemma2Attention: not bool(layer_idx % 2)
  return undefined;
}

/** Logits [len][vocab] of one sequence; capture(name, rows) sees each linear weight's inputs. */
function referenceLogits(
  cfg: Cfg,
  t: Tensors,
  ids: number[],
  opts: { noWindow?: boolean; capture?: (weight: string, rows: Float64Array[]) => void } = {},
): Float64Array[] {
  const mt = cfg.model_type as string;
  const gemma = mt === 'gemma' || mt === 'gemma2',
    phi = mt === 'phi',
    phi3 = mt === 'phi3';
  const H = cfg.hidden_size,
    nh = cfg.num_attention_heads,
    nkv = cfg.num_key_value_heads ?? nh,
    I = cfg.intermediate_size,
    V = cfg.vocab_size;
  const hd = cfg.head_dim ?? H / nh;
  const rot = Math.floor(hd * (cfg.partial_rotary_factor ?? 1));
  const theta = cfg.rope_theta ?? 10000;
  const scale = mt === 'gemma2' ? cfg.query_pre_attn_scalar ** -0.5 : hd ** -0.5;
  const get = (n: string) => {
    const v = t.get(n);
    if (!v) throw new Error(`missing ${n}`);
    return v;
  };
  const norm = (x: Float64Array, prefix: string) => {
    const w = get(`${prefix}.weight`);
    if (phi) {
      const mean = x.reduce((a, v) => a + v, 0) / H;
      const v = x.reduce((a, u) => a + (u - mean) ** 2, 0) / H;
      const b = get(`${prefix}.bias`);
      return x.map((u, i) => ((u - mean) / Math.sqrt(v + cfg.layer_norm_eps)) * w[i] + b[i]);
    }
    const r = Math.sqrt(x.reduce((a, v) => a + v * v, 0) / H + cfg.rms_norm_eps);
    return x.map((u, i) => (u / r) * (gemma ? 1 + w[i] : w[i]));
  };
  const rope = (v: Float64Array, pos: number) => {
    const out = Float64Array.from(v),
      half = rot / 2;
    for (let j = 0; j < half; j++) {
      const a = pos / Math.pow(theta, (2 * j) / rot);
      out[j] = v[j] * Math.cos(a) - v[j + half] * Math.sin(a);
      out[j + half] = v[j + half] * Math.cos(a) + v[j] * Math.sin(a);
    }
    return out;
  };
  const emb = get('model.embed_tokens.weight');
  let hs = ids.map((id) => emb.slice(id * H, (id + 1) * H).map((x) => (gemma ? x * Math.sqrt(H) : x)));
  const lin = (p: string, name: string, rows: Float64Array[], out: number) =>
    rows.map((x) => matvec(get(`${p}${name}.weight`), x, out, t.get(`${p}${name}.bias`)));
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    const win = opts.noWindow ? undefined : windowOf(cfg, l);
    const attnIn = hs.map((x) => norm(x, p + 'input_layernorm'));
    let q: Float64Array[], k: Float64Array[], v: Float64Array[];
    if (phi3) {
      opts.capture?.(p + 'self_attn.qkv_proj.weight', attnIn);
      const qkv = lin(p, 'self_attn.qkv_proj', attnIn, (nh + 2 * nkv) * hd);
      q = qkv.map((r) => r.slice(0, nh * hd));
      k = qkv.map((r) => r.slice(nh * hd, (nh + nkv) * hd));
      v = qkv.map((r) => r.slice((nh + nkv) * hd));
    } else {
      for (const n of ['q_proj', 'k_proj', 'v_proj', ...(phi ? ['fc1'] : [])])
        opts.capture?.(p + (n === 'fc1' ? 'mlp.' : 'self_attn.') + n + '.weight', attnIn);
      q = lin(p, 'self_attn.q_proj', attnIn, nh * hd);
      k = lin(p, 'self_attn.k_proj', attnIn, nkv * hd);
      v = lin(p, 'self_attn.v_proj', attnIn, nkv * hd);
    }
    const attnOut = ids.map((_, i) => {
      const o = new Float64Array(nh * hd);
      for (let h = 0; h < nh; h++) {
        const g = Math.floor(h / (nh / nkv));
        const qi = rope(q[i].slice(h * hd, (h + 1) * hd), i);
        const js: number[] = [],
          s: number[] = [];
        for (let j = 0; j <= i; j++) {
          if (win !== undefined && j <= i - win) continue;
          const kj = rope(k[j].slice(g * hd, (g + 1) * hd), j);
          js.push(j);
          s.push(cap(qi.reduce((a, x, e) => a + x * kj[e], 0) * scale, cfg.attn_logit_softcapping));
        }
        const m = Math.max(...s);
        const ex = s.map((x) => Math.exp(x - m));
        const z = ex.reduce((a, b) => a + b, 0);
        js.forEach((j, n) => {
          for (let e = 0; e < hd; e++) o[h * hd + e] += (ex[n] / z) * v[j][g * hd + e];
        });
      }
      return o;
    });
    const oName = phi ? 'self_attn.dense' : 'self_attn.o_proj';
    opts.capture?.(p + oName + '.weight', attnOut);
    let attn = lin(p, oName, attnOut, H);
    if (mt === 'gemma2') attn = attn.map((x) => norm(x, p + 'post_attention_layernorm'));
    const mlp = (x: Float64Array[]) => {
      let act: Float64Array[];
      if (phi) act = lin(p, 'mlp.fc1', x, I).map((r) => r.map(geluTanh));
      else {
        const f = gemma ? geluTanh : silu;
        if (phi3) {
          opts.capture?.(p + 'mlp.gate_up_proj.weight', x);
          act = lin(p, 'mlp.gate_up_proj', x, 2 * I).map((r) => r.slice(0, I).map((gv, e) => f(gv) * r[I + e]));
        } else {
          opts.capture?.(p + 'mlp.gate_proj.weight', x);
          const g = lin(p, 'mlp.gate_proj', x, I),
            u = lin(p, 'mlp.up_proj', x, I);
          act = g.map((r, n) => r.map((gv, e) => f(gv) * u[n][e]));
        }
      }
      const dName = phi ? 'mlp.fc2' : 'mlp.down_proj';
      opts.capture?.(p + dName + '.weight', act);
      return lin(p, dName, act, H);
    };
    if (phi) {
      const m = mlp(attnIn);
      hs = hs.map((x, i) => x.map((r, e) => r + (attn[i][e] + m[i][e])));
    } else {
      hs = hs.map((x, i) => x.map((r, e) => r + attn[i][e]));
      const mlpIn = hs.map((x) =>
        norm(x, p + (mt === 'gemma2' ? 'pre_feedforward_layernorm' : 'post_attention_layernorm')),
      );
      let m = mlp(mlpIn);
      if (mt === 'gemma2') m = m.map((x) => norm(x, p + 'post_feedforward_layernorm'));
      hs = hs.map((x, i) => x.map((r, e) => r + m[i][e]));
    }
  }
  const head = t.get('lm_head.weight') ?? emb;
  const final = phi ? 'model.final_layernorm' : 'model.norm';
  return hs.map((x) =>
    matvec(head, norm(x, final), V, t.get('lm_head.bias')).map((z) => cap(z, cfg.final_logit_softcapping)),
  );
}

// ---------------------------------------------------------------------------------------------
// Tiny checkpoints of each family.

function writeFamily(dir: string, cfg: Cfg): void {
  const mt = cfg.model_type as string;
  const H = cfg.hidden_size,
    nh = cfg.num_attention_heads,
    nkv = cfg.num_key_value_heads ?? nh,
    I = cfg.intermediate_size,
    V = cfg.vocab_size;
  const hd = cfg.head_dim ?? H / nh;
  const gemma = mt.startsWith('gemma'),
    phi = mt === 'phi';
  let seed = 11;
  const t: Record<string, { shape: number[]; data: Float32Array }> = {};
  const put = (name: string, shape: number[], a: number, offset = 0) => {
    const n = shape.reduce((x, y) => x * y, 1);
    t[name] = { shape, data: randomWeights(n, seed++, a).map((x) => x + offset) };
  };
  const norm = (name: string) => {
    put(`${name}.weight`, [H], 0.2, gemma ? 0 : 1);
    if (phi) put(`${name}.bias`, [H], 0.1);
  };
  put('model.embed_tokens.weight', [V, H], 1);
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    norm(p + 'input_layernorm');
    if (!phi) norm(p + 'post_attention_layernorm');
    if (mt === 'gemma2') {
      norm(p + 'pre_feedforward_layernorm');
      norm(p + 'post_feedforward_layernorm');
    }
    const a = 1.2 / Math.sqrt(H);
    if (mt === 'phi3') put(p + 'self_attn.qkv_proj.weight', [(nh + 2 * nkv) * hd, H], a);
    else
      for (const [n, rows] of [
        ['q_proj', nh * hd],
        ['k_proj', nkv * hd],
        ['v_proj', nkv * hd],
      ] as const) {
        put(`${p}self_attn.${n}.weight`, [rows, H], a);
        if (phi || mt === 'qwen2') put(`${p}self_attn.${n}.bias`, [rows], 0.3);
      }
    const o = phi ? 'self_attn.dense' : 'self_attn.o_proj';
    put(`${p}${o}.weight`, [H, nh * hd], 1.2 / Math.sqrt(nh * hd));
    if (phi) {
      put(`${p}${o}.bias`, [H], 0.1);
      put(`${p}mlp.fc1.weight`, [I, H], a);
      put(`${p}mlp.fc1.bias`, [I], 0.1);
      put(`${p}mlp.fc2.weight`, [H, I], 1.2 / Math.sqrt(I));
      put(`${p}mlp.fc2.bias`, [H], 0.1);
    } else {
      if (mt === 'phi3') put(`${p}mlp.gate_up_proj.weight`, [2 * I, H], a);
      else {
        put(`${p}mlp.gate_proj.weight`, [I, H], a);
        put(`${p}mlp.up_proj.weight`, [I, H], a);
      }
      put(`${p}mlp.down_proj.weight`, [H, I], 1.2 / Math.sqrt(I));
    }
  }
  norm(phi ? 'model.final_layernorm' : 'model.norm');
  if (!cfg.tie_word_embeddings) put('lm_head.weight', [V, H], 0.5);
  if (phi) put('lm_head.bias', [V], 0.1);
  writeCheckpoint(dir, cfg, t);
}

const BASE = {
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 37,
  rms_norm_eps: 1e-6,
  rope_theta: 100,
  bos_token_id: 1,
};

/** Each family with a window shorter than the sequences (where it has one). */
const FAMILIES: Record<string, Cfg> = {
  mistral: { ...BASE, model_type: 'mistral', sliding_window: 4, tie_word_embeddings: false },
  qwen2: { ...BASE, model_type: 'qwen2', use_sliding_window: true, sliding_window: 5, tie_word_embeddings: true },
  gemma2: {
    ...BASE,
    model_type: 'gemma2',
    head_dim: 8,
    query_pre_attn_scalar: 12,
    attn_logit_softcapping: 2.5,
    final_logit_softcapping: 3.0,
    sliding_window: 3,
    hidden_activation: 'gelu_pytorch_tanh',
    tie_word_embeddings: true,
  },
  phi3: {
    ...BASE,
    model_type: 'phi3',
    sliding_window: 4,
    partial_rotary_factor: 0.5,
    tie_word_embeddings: false,
  },
  gemma: {
    ...BASE,
    model_type: 'gemma',
    head_dim: 8,
    hidden_activation: 'gelu_pytorch_tanh',
    tie_word_embeddings: true,
  },
  phi: {
    ...BASE,
    model_type: 'phi',
    partial_rotary_factor: 0.5,
    layer_norm_eps: 1e-5,
    hidden_act: 'gelu_new',
    tie_word_embeddings: false,
  },
};

const SEQS = [
  [1, 5, 9, 30, 2, 2, 17, 36, 0, 8, 21, 13, 4],
  [1, 33, 7, 7, 19, 11, 25, 3, 3],
];

const models = new Map<string, string>();
function model(family: string): string {
  let dir = models.get(family);
  if (!dir) {
    dir = path.join(tempDir('loftq-arch-'), family);
    writeFamily(dir, FAMILIES[family]);
    models.set(family, dir);
  }
  return dir;
}

process.on('exit', () => {
  for (const d of models.values()) fs.rmSync(path.dirname(d), { recursive: true, force: true });
});

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function engineLogits(dir: string, seqs: number[][], backend: BackendChoice): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  await runForward(await openCheckpoint(dir), await readModelConfig(dir), seqs, {
    backend: await createBackend(backend, { threads: 2 }),
    onLogits: (k, l) => {
      out[k] = Float32Array.from(l);
    },
  });
  return out;
}

async function compare(family: string, backend: BackendChoice): Promise<void> {
  const dir = model(family);
  const { cfg, t } = await loadAll(dir);
  const ours = await engineLogits(dir, SEQS, backend);
  const V = cfg.vocab_size;
  SEQS.forEach((ids, k) => {
    const ref = referenceLogits(cfg, t, ids);
    const flat = Float64Array.from(ref.flatMap((r) => [...r]));
    const err = maxAbs(ours[k], flat);
    assert.ok(err <= 1e-4, `${family} (${backend}) sequence ${k}: max |Δ logit| ${err}`);
    assert.equal(ours[k].length, ids.length * V);
  });
  // The window changes the answer here (it is shorter than the sequences): a pass that ignored
  // it would be far from the reference.
  if ([0, 1, 2].some((l) => windowOf(cfg, l) !== undefined)) {
    const full = Float64Array.from(referenceLogits(cfg, t, SEQS[0], { noWindow: true }).flatMap((r) => [...r]));
    const apart = maxAbs(ours[0], full);
    assert.ok(apart > 1e-2, `${family}: the window made no difference (${apart})`);
  }
}

for (const family of Object.keys(FAMILIES)) {
  const w = FAMILIES[family].sliding_window;
  const what = w ? `window ${w} < ${SEQS[0].length} tokens` : 'no window';
  test(`${family} (${what}): logits equal an independent float64 forward`, async () => {
    await compare(family, 'wasm');
  });
}

test('the same on the native backend', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return t.skip(`native backend not available: ${problem}`);
  for (const family of Object.keys(FAMILIES)) await compare(family, 'native');
});

test('KV-cached generation (--calib-generate) gives the forward pass’s logits at every step', async () => {
  for (const family of Object.keys(FAMILIES)) {
    const dir = model(family);
    const ck = await openCheckpoint(dir);
    const c = await readModelConfig(dir);
    const backend = await createBackend('wasm');
    const steps: Float32Array[] = [];
    const seqs = await generateSequences(ck, c, {
      sequences: 2,
      length: 12,
      seed: 3,
      backend,
      onLogits: (pos, l) => {
        steps[pos] = Float32Array.from(l);
      },
    });
    const ours = await engineLogits(dir, seqs, 'wasm');
    const V = c.vocabSize;
    for (let pos = 0; pos < 11; pos++)
      for (let s = 0; s < 2; s++) {
        const err = maxAbs(steps[pos].subarray(s * V, (s + 1) * V), ours[s].subarray(pos * V, (pos + 1) * V));
        assert.ok(err <= 1e-4, `${family} position ${pos}, sequence ${s}: ${err}`);
      }
  }
});

test('calibration statistics: one G per fused Phi-3 matrix, one for Phi-2’s q/k/v/fc1, equal to XᵀX/N', async () => {
  for (const family of ['phi3', 'phi', 'gemma2']) {
    const dir = model(family);
    const { cfg, t } = await loadAll(dir);
    const want = new Map<string, { dim: number; g: Float64Array; n: number }>();
    for (const ids of SEQS)
      referenceLogits(cfg, t, ids, {
        capture: (name, rows) => {
          const dim = rows[0].length;
          let a = want.get(name);
          if (!a) want.set(name, (a = { dim, g: new Float64Array(dim * dim), n: 0 }));
          for (const x of rows)
            for (let i = 0; i < dim; i++) for (let j = 0; j < dim; j++) a.g[i * dim + j] += x[i] * x[j];
          a.n += rows.length;
        },
      });
    const stats = await collectInputStats(await openCheckpoint(dir), SEQS, { backend: await createBackend('wasm') });
    const layer0 = [...stats.keys()].filter((k) => k.startsWith('model.layers.0.')).sort();
    const expected: Record<string, string[]> = {
      phi3: ['mlp.down_proj', 'mlp.gate_up_proj', 'self_attn.o_proj', 'self_attn.qkv_proj'],
      phi: ['mlp.fc1', 'mlp.fc2', 'self_attn.dense', 'self_attn.k_proj', 'self_attn.q_proj', 'self_attn.v_proj'],
      gemma2: [
        'mlp.down_proj',
        'mlp.gate_proj',
        'mlp.up_proj',
        'self_attn.k_proj',
        'self_attn.o_proj',
        'self_attn.q_proj',
        'self_attn.v_proj',
      ],
    };
    assert.deepEqual(
      layer0,
      expected[family].map((n) => `model.layers.0.${n}.weight`),
    );
    if (family === 'phi') {
      const q = stats.get('model.layers.0.self_attn.q_proj.weight');
      assert.equal(stats.get('model.layers.0.mlp.fc1.weight'), q, 'q/k/v and fc1 share one statistic');
    }
    for (const [name, a] of want) {
      if (!name.includes('layers.0.') && !name.includes('layers.2.')) continue;
      const s = stats.get(name);
      assert.ok(s && s.kind === 'full', name);
      if (s.kind !== 'full') continue;
      assert.equal(s.count, a.n);
      const ref = a.g.map((v) => v / a.n);
      const scale = Math.max(...ref.map(Math.abs));
      assert.ok(maxAbs(s.g, ref) <= 1e-5 * scale, `${family} ${name}: ${maxAbs(s.g, ref)} of ${scale}`);
    }
  }
});
