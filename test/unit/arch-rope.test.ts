// rope_scaling as transformers 4.49 applies it (modeling_rope_utils.py), against a float64 Llama
// forward written here whose inverse frequencies follow transformers' formulas in float64:
// 'linear', 'dynamic' (NTK: the base grows with a sequence longer than max_position_embeddings,
// per sequence; in cached decoding, position p rotated as a p + 1 token sequence), 'yarn'
// (Qwen2.5's long-context form: ramped interpolation, cos/sin × attention factor) and 'llama3'
// (beyond the fixture: sequences longer than original_max_position_embeddings). And the refusals:
// an unknown model_type, a rope type or rope_scaling key not implemented, other fields that change
// the forward pass — one line naming config.json, the field and what is supported.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { openCheckpoint } from '../../server/src/checkpoint';
import { createBackend } from '../../server/src/linalg/backend';
import { parseModelConfig, readModelConfig } from '../../server/src/model/config';
import { runForward } from '../../server/src/model/forward';
import { generateSequences } from '../../server/src/model/generate';
import { loadAll, makeTinyModel } from '../model-reference';
import { tempDir } from '../helpers';

type Cfg = Record<string, any>;

/** transformers' inverse frequencies (float64) for a sequence of seqLen tokens, and the factor
 *  cos/sin are multiplied by. */
function invFreq(cfg: Cfg, d: number, seqLen: number): { inv: number[]; scale: number } {
  const base = cfg.rope_theta,
    rs = cfg.rope_scaling,
    half = d / 2;
  const plain = (b: number) => Array.from({ length: half }, (_, j) => 1 / b ** ((2 * j) / d));
  if (!rs) return { inv: plain(base), scale: 1 };
  const f = rs.factor;
  switch (rs.rope_type ?? rs.type) {
    case 'linear':
      return { inv: plain(base).map((v) => v / f), scale: 1 };
    case 'dynamic': {
      const mp = cfg.max_position_embeddings;
      const len = Math.max(seqLen, mp);
      return { inv: plain(base * ((f * len) / mp - (f - 1)) ** (d / (d - 2))), scale: 1 };
    }
    case 'yarn': {
      const mp = cfg.max_position_embeddings;
      const dimOf = (rot: number) => (d * Math.log(mp / (rot * 2 * Math.PI))) / (2 * Math.log(base));
      const low = Math.max(Math.floor(dimOf(rs.beta_fast ?? 32)), 0);
      let high = Math.min(Math.ceil(dimOf(rs.beta_slow ?? 1)), d - 1);
      if (low === high) high += 0.001;
      const inv = plain(base).map((e, j) => {
        const ramp = Math.min(1, Math.max(0, (j - low) / (high - low)));
        const extrapolationWeight = 1 - ramp;
        return (e / f) * (1 - extrapolationWeight) + e * extrapolationWeight;
      });
      return { inv, scale: rs.attention_factor ?? 0.1 * Math.log(f) + 1 };
    }
    case 'llama3': {
      const old = rs.original_max_position_embeddings,
        lo = rs.low_freq_factor,
        hi = rs.high_freq_factor;
      const inv = plain(base).map((v) => {
        const wl = (2 * Math.PI) / v;
        if (wl < old / hi) return v;
        if (wl > old / lo) return v / f;
        const s = (old / wl - lo) / (hi - lo);
        return ((1 - s) * v) / f + s * v;
      });
      return { inv, scale: 1 };
    }
  }
  throw new Error(`no reference for ${JSON.stringify(rs)}`);
}

function matvec(w: Float64Array, x: Float64Array, rows: number): Float64Array {
  const n = x.length,
    y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += w[r * n + i] * x[i];
    y[r] = s;
  }
  return y;
}

/** A float64 Llama forward; `freqOf(position)` gives the rotation each position's q and k get. */
function llamaLogits(
  cfg: Cfg,
  t: Map<string, Float64Array>,
  ids: number[],
  freqOf: (pos: number) => { inv: number[]; scale: number },
): Float64Array[] {
  const H = cfg.hidden_size,
    nh = cfg.num_attention_heads,
    nkv = cfg.num_key_value_heads ?? nh,
    I = cfg.intermediate_size;
  const hd = H / nh,
    half = hd / 2;
  const get = (n: string) => t.get(n)!;
  const rms = (x: Float64Array, w: Float64Array) => {
    const r = Math.sqrt(x.reduce((a, v) => a + v * v, 0) / H + cfg.rms_norm_eps);
    return x.map((v, i) => (v / r) * w[i]);
  };
  const rope = (v: Float64Array, pos: number) => {
    const { inv, scale } = freqOf(pos);
    const out = Float64Array.from(v);
    for (let j = 0; j < half; j++) {
      const c = Math.cos(pos * inv[j]) * scale,
        s = Math.sin(pos * inv[j]) * scale;
      out[j] = v[j] * c - v[j + half] * s;
      out[j + half] = v[j + half] * c + v[j] * s;
    }
    return out;
  };
  const emb = get('model.embed_tokens.weight');
  let hs = ids.map((id) => emb.slice(id * H, (id + 1) * H));
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    const n1 = hs.map((x) => rms(x, get(p + 'input_layernorm.weight')));
    const q = n1.map((x) => matvec(get(p + 'self_attn.q_proj.weight'), x, nh * hd));
    const k = n1.map((x) => matvec(get(p + 'self_attn.k_proj.weight'), x, nkv * hd));
    const v = n1.map((x) => matvec(get(p + 'self_attn.v_proj.weight'), x, nkv * hd));
    const att = ids.map((_, i) => {
      const o = new Float64Array(nh * hd);
      for (let h = 0; h < nh; h++) {
        const g = Math.floor(h / (nh / nkv));
        const qi = rope(q[i].slice(h * hd, (h + 1) * hd), i);
        const s = ids.slice(0, i + 1).map((_, j) => {
          const kj = rope(k[j].slice(g * hd, (g + 1) * hd), j);
          return qi.reduce((a, x, e) => a + x * kj[e], 0) / Math.sqrt(hd);
        });
        const m = Math.max(...s);
        const ex = s.map((x) => Math.exp(x - m));
        const z = ex.reduce((a, b) => a + b, 0);
        ex.forEach((e, j) => {
          for (let d = 0; d < hd; d++) o[h * hd + d] += (e / z) * v[j][g * hd + d];
        });
      }
      return o;
    });
    hs = hs.map((x, i) => {
      const y = matvec(get(p + 'self_attn.o_proj.weight'), att[i], H);
      return x.map((a, e) => a + y[e]);
    });
    const n2 = hs.map((x) => rms(x, get(p + 'post_attention_layernorm.weight')));
    hs = hs.map((x, i) => {
      const g = matvec(get(p + 'mlp.gate_proj.weight'), n2[i], I),
        u = matvec(get(p + 'mlp.up_proj.weight'), n2[i], I);
      const a = g.map((gv, e) => (gv / (1 + Math.exp(-gv))) * u[e]);
      const y = matvec(get(p + 'mlp.down_proj.weight'), a, H);
      return x.map((z, e) => z + y[e]);
    });
  }
  const head = t.get('lm_head.weight') ?? emb;
  return hs.map((x) => matvec(head, rms(x, get('model.norm.weight')), cfg.vocab_size));
}

const BASE = {
  model_type: 'llama',
  hidden_size: 32,
  intermediate_size: 40,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  vocab_size: 41,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  max_position_embeddings: 8,
  tie_word_embeddings: true,
};
const LONG = [1, 4, 9, 16, 25, 36, 8, 21, 34, 12, 3, 40, 7, 2, 19, 30, 11, 22],
  SHORT = [1, 7, 14, 21, 28, 35];

const dirs: string[] = [];
process.on('exit', () => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

async function check(rope_scaling: Cfg, opts: { perSequenceLength?: boolean } = {}): Promise<number> {
  const dir = tempDir('loftq-rope-');
  dirs.push(dir);
  makeTinyModel(dir, { ...BASE, rope_scaling } as never);
  const { cfg, t } = await loadAll(dir);
  const hd = cfg.hidden_size / cfg.num_attention_heads;
  const ours: Float32Array[] = [];
  await runForward(await openCheckpoint(dir), await readModelConfig(dir), [LONG, SHORT], {
    backend: await createBackend('wasm'),
    onLogits: (k, l) => {
      ours[k] = Float32Array.from(l);
    },
  });
  let worst = 0;
  [LONG, SHORT].forEach((ids, k) => {
    const f = invFreq(cfg, hd, opts.perSequenceLength ? ids.length : 0);
    const ref = llamaLogits(cfg, t, ids, () => f).flatMap((r) => [...r]);
    ref.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - ours[k][i]))));
  });
  return worst;
}

/** The same model without rope_scaling: how far the scaling moves the logits. */
async function unscaledDistance(rope_scaling: Cfg): Promise<number> {
  const dir = tempDir('loftq-rope-');
  dirs.push(dir);
  makeTinyModel(dir, { ...BASE, rope_scaling } as never);
  const { cfg, t } = await loadAll(dir);
  const hd = cfg.hidden_size / cfg.num_attention_heads;
  const a = llamaLogits(cfg, t, LONG, () => invFreq(cfg, hd, LONG.length)).flatMap((r) => [...r]);
  const b = llamaLogits({ ...cfg, rope_scaling: null }, t, LONG, () => invFreq({ ...cfg, rope_scaling: null }, hd, 0));
  return Math.max(...b.flatMap((r) => [...r]).map((v, i) => Math.abs(v - a[i])));
}

const CASES: [string, Cfg, { perSequenceLength?: boolean }][] = [
  ['linear', { rope_type: 'linear', factor: 4 }, {}],
  [
    'dynamic (a sequence past max_position_embeddings, one within)',
    { type: 'dynamic', factor: 3 },
    { perSequenceLength: true },
  ],
  [
    'yarn (Qwen2.5 form: original = max_position_embeddings)',
    { type: 'yarn', factor: 4, original_max_position_embeddings: 8 },
    {},
  ],
  [
    'yarn with attention_factor and beta_fast/beta_slow',
    { rope_type: 'yarn', factor: 2, attention_factor: 1.3, beta_fast: 16, beta_slow: 2 },
    {},
  ],
  [
    'llama3 (sequences past original_max_position_embeddings)',
    { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 6 },
    {},
  ],
];

for (const [name, rs, opts] of CASES) {
  test(`rope_scaling ${name}: logits equal transformers' formulas in float64`, async () => {
    const err = await check(rs, opts);
    assert.ok(err <= 1e-4, `max |Δ logit| ${err}`);
    assert.ok((await unscaledDistance(rs)) > 1e-2, 'the scaling changes the model');
  });
}

test('rope_scaling dynamic in cached decoding: position p rotated as a sequence of p + 1 tokens', async () => {
  const dir = tempDir('loftq-rope-');
  dirs.push(dir);
  makeTinyModel(dir, { ...BASE, rope_scaling: { rope_type: 'dynamic', factor: 2 } } as never);
  const { cfg, t } = await loadAll(dir);
  const c = await readModelConfig(dir);
  const steps: Float32Array[] = [];
  const [seq] = await generateSequences(await openCheckpoint(dir), c, {
    sequences: 1,
    length: 14,
    seed: 9,
    backend: await createBackend('wasm'),
    onLogits: (pos, l) => {
      steps[pos] = Float32Array.from(l);
    },
  });
  const hd = cfg.hidden_size / cfg.num_attention_heads;
  // transformers' _dynamic_frequency_update: the step at position p computes inv_freq for p + 1
  // tokens (once past max_position_embeddings); keys keep the rotation they were cached with.
  const ref = llamaLogits(cfg, t, seq.slice(0, 13), (pos) => invFreq(cfg, hd, pos + 1));
  let worst = 0;
  for (let p = 0; p < 13; p++) ref[p].forEach((v, j) => (worst = Math.max(worst, Math.abs(v - steps[p][j]))));
  assert.ok(worst <= 1e-4, `max |Δ logit| ${worst}`);
});

const FILE = '/models/m/config.json';
const refusal = (json: Cfg) => {
  try {
    parseModelConfig(FILE, json);
  } catch (e) {
    const msg = (e as Error).message;
    assert.equal(msg.split('\n').length, 1, msg);
    assert.ok(msg.startsWith(`${FILE}: `), msg);
    return msg;
  }
  assert.fail(`accepted ${JSON.stringify(json)}`);
};

test('refusals: one line naming config.json, the field or model_type, and the supported list', () => {
  const types = 'supported: llama, mistral, qwen2, gemma, gemma2, phi, phi3';
  const ropes = 'supported: default, linear, dynamic, yarn, llama3';
  assert.match(
    refusal({ ...BASE, model_type: 'gpt_neox' }),
    new RegExp(`model_type 'gpt_neox' is not supported .*\\(${types}\\)`),
  );
  assert.match(
    refusal({ ...BASE, model_type: undefined }),
    /field 'model_type' is missing \(the forward pass runs llama, /,
  );
  const longrope = { rope_type: 'longrope', short_factor: [1], long_factor: [2] };
  assert.match(
    refusal({ ...BASE, model_type: 'phi3', rope_scaling: longrope }),
    new RegExp(
      `field 'rope_scaling' has rope_type 'longrope', which the forward pass does not implement \\(${ropes}\\)`,
    ),
  );
  assert.match(
    refusal({ ...BASE, rope_scaling: { type: 'su', factor: 2 } }),
    /rope_type 'su'.*supported: default, linear/,
  );
  assert.match(
    refusal({ ...BASE, rope_scaling: { factor: 2 } }),
    /field 'rope_scaling' has no rope_type \(supported: /,
  );
  assert.match(
    refusal({ ...BASE, rope_scaling: { rope_type: 'yarn', factor: 4, mscale: 0.7 } }),
    /field 'rope_scaling' has 'mscale', which the forward pass does not implement for rope_type 'yarn' \(it reads /,
  );
  assert.match(
    refusal({ ...BASE, rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 2 } }),
    /original_max_position_embeddings 2 ≠ max_position_embeddings 8/,
  );
  assert.match(refusal({ ...BASE, rope_scaling: { rope_type: 'linear' } }), /needs 'factor' as a positive number/);
  const { max_position_embeddings: _m, ...noMax } = BASE;
  assert.match(
    refusal({ ...noMax, rope_scaling: { rope_type: 'dynamic', factor: 2 } }),
    /field 'max_position_embeddings' is missing/,
  );
  assert.match(
    refusal({ ...BASE, model_type: 'phi', qk_layernorm: true }),
    /field 'qk_layernorm' is true, which the forward pass does not implement/,
  );
  assert.match(
    refusal({ ...BASE, model_type: 'gemma', hidden_activation: 'relu' }),
    /field 'hidden_activation' must be one of "gelu_pytorch_tanh", "gelu_new", "gelu" \(found "relu"\)/,
  );
  assert.match(refusal({ ...BASE, hidden_act: 'gelu' }), /field 'hidden_act' must be "silu" \(found "gelu"\)/);
  assert.match(
    refusal({ ...BASE, model_type: 'phi', partial_rotary_factor: 0.35 }),
    /partial_rotary_factor.*RoPE needs an even number/,
  );
  // Accepted: rope_type default, and a null rope_scaling (the fixtures' configs).
  for (const rs of [null, { rope_type: 'default' }])
    assert.equal(parseModelConfig(FILE, { ...BASE, rope_scaling: rs }).rope.type, 'default');
});
