// An independent float64 forward pass of a Llama-family decoder for the model tests, written
// straight from the Hugging Face modeling code (LlamaRMSNorm, rotate_half, repeat_kv, eager
// attention, LlamaMLP) token by token, sharing nothing with server/src/model/. Also a writer
// of small generated checkpoints (config.json + F32 weights).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint, readTensorF32 } from '../server/src/checkpoint';

export interface RefConfig {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads?: number;
  head_dim?: number;
  vocab_size: number;
  rope_theta?: number;
  rms_norm_eps?: number;
  tie_word_embeddings?: boolean;
  model_type: string;
  attention_bias?: boolean;
}

type Tensors = Map<string, Float64Array>;

export async function loadAll(dir: string): Promise<{ cfg: RefConfig; t: Tensors }> {
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as RefConfig;
  const ck = await openCheckpoint(dir);
  const t: Tensors = new Map();
  for (const info of ck.tensors) t.set(info.name, Float64Array.from(await readTensorF32(info)));
  return { cfg, t };
}

/** y = W x (+ b), W [out, in] row-major. */
function matvec(w: Float64Array, x: Float64Array, out: number, b?: Float64Array): Float64Array {
  const inn = x.length,
    y = new Float64Array(out);
  for (let r = 0; r < out; r++) {
    let s = b ? b[r] : 0;
    for (let i = 0; i < inn; i++) s += w[r * inn + i] * x[i];
    y[r] = s;
  }
  return y;
}

function rms(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  const ms = x.reduce((a, v) => a + v * v, 0) / x.length;
  return x.map((v, i) => (v / Math.sqrt(ms + eps)) * w[i]);
}

function rotate(v: Float64Array, pos: number, theta: number): Float64Array {
  const d = v.length,
    half = d / 2;
  const cos = new Float64Array(d),
    sin = new Float64Array(d);
  for (let i = 0; i < d; i++) {
    const ang = pos / Math.pow(theta, (2 * (i % half)) / d);
    cos[i] = Math.cos(ang);
    sin[i] = Math.sin(ang);
  }
  const rot = new Float64Array(d); // rotate_half: cat(-x2, x1)
  for (let i = 0; i < half; i++) {
    rot[i] = -v[i + half];
    rot[i + half] = v[i];
  }
  return v.map((x, i) => x * cos[i] + rot[i] * sin[i]);
}

/** Logits [len][vocab] of one sequence, float64 throughout. */
export function referenceLogits(
  cfg: RefConfig,
  t: Tensors,
  ids: number[],
  capture?: (weight: string, rows: Float64Array[]) => void,
): Float64Array[] {
  const H = cfg.hidden_size,
    nh = cfg.num_attention_heads,
    nkv = cfg.num_key_value_heads ?? nh;
  const hd = cfg.head_dim ?? H / nh,
    eps = cfg.rms_norm_eps ?? 1e-6,
    theta = cfg.rope_theta ?? 10000;
  const I = cfg.intermediate_size;
  const get = (n: string) => {
    const v = t.get(n);
    if (!v) throw new Error(`missing ${n}`);
    return v;
  };
  const emb = get('model.embed_tokens.weight');
  let hs = ids.map((id) => emb.slice(id * H, (id + 1) * H));
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    const n1 = hs.map((x) => rms(x, get(p + 'input_layernorm.weight'), eps));
    capture?.(p + 'self_attn.q_proj.weight', n1);
    const q = n1.map((x) => matvec(get(p + 'self_attn.q_proj.weight'), x, nh * hd, t.get(p + 'self_attn.q_proj.bias')));
    const k = n1.map((x) =>
      matvec(get(p + 'self_attn.k_proj.weight'), x, nkv * hd, t.get(p + 'self_attn.k_proj.bias')),
    );
    const v = n1.map((x) =>
      matvec(get(p + 'self_attn.v_proj.weight'), x, nkv * hd, t.get(p + 'self_attn.v_proj.bias')),
    );
    const attnOut = ids.map((_, i) => {
      const o = new Float64Array(nh * hd);
      for (let h = 0; h < nh; h++) {
        const kvh = Math.floor(h / (nh / nkv)); // repeat_kv
        const qi = rotate(q[i].slice(h * hd, (h + 1) * hd), i, theta);
        const logits: number[] = [];
        for (let j = 0; j <= i; j++) {
          const kj = rotate(k[j].slice(kvh * hd, (kvh + 1) * hd), j, theta);
          logits.push(qi.reduce((a, x, e) => a + x * kj[e], 0) / Math.sqrt(hd));
        }
        const m = Math.max(...logits);
        const ex = logits.map((x) => Math.exp(x - m));
        const z = ex.reduce((a, b) => a + b, 0);
        for (let j = 0; j <= i; j++) for (let e = 0; e < hd; e++) o[h * hd + e] += (ex[j] / z) * v[j][kvh * hd + e];
      }
      return o;
    });
    capture?.(p + 'self_attn.o_proj.weight', attnOut);
    hs = hs.map((x, i) => {
      const y = matvec(get(p + 'self_attn.o_proj.weight'), attnOut[i], H);
      return x.map((a, e) => a + y[e]);
    });
    const n2 = hs.map((x) => rms(x, get(p + 'post_attention_layernorm.weight'), eps));
    capture?.(p + 'mlp.gate_proj.weight', n2);
    const acts = n2.map((x) => {
      const g = matvec(get(p + 'mlp.gate_proj.weight'), x, I),
        u = matvec(get(p + 'mlp.up_proj.weight'), x, I);
      return g.map((gv, e) => (gv / (1 + Math.exp(-gv))) * u[e]);
    });
    capture?.(p + 'mlp.down_proj.weight', acts);
    hs = hs.map((x, i) => {
      const y = matvec(get(p + 'mlp.down_proj.weight'), acts[i], H);
      return x.map((z, e) => z + y[e]);
    });
  }
  const head = cfg.tie_word_embeddings === true || !t.has('lm_head.weight') ? emb : get('lm_head.weight');
  return hs.map((x) => matvec(head, rms(x, get('model.norm.weight'), eps), cfg.vocab_size));
}

/** Writes a single-file F32 safetensors checkpoint and its config.json into dir. */
export function writeCheckpoint(
  dir: string,
  cfg: object,
  tensors: Record<string, { shape: number[]; data: Float32Array }>,
): void {
  fs.mkdirSync(dir, { recursive: true });
  const header: Record<string, unknown> = {};
  let off = 0;
  const names = Object.keys(tensors);
  for (const n of names) {
    const b = tensors[n].data.byteLength;
    header[n] = { dtype: 'F32', shape: tensors[n].shape, data_offsets: [off, off + b] };
    off += b;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8) json += ' ';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const parts = [
    len,
    Buffer.from(json),
    ...names.map((n) => Buffer.from(tensors[n].data.buffer, tensors[n].data.byteOffset, tensors[n].data.byteLength)),
  ];
  fs.writeFileSync(path.join(dir, 'model.safetensors'), Buffer.concat(parts));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg, null, 2));
}

/** Deterministic pseudo-random weights in [-a, a). */
export function randomWeights(n: number, seed: number, a = 0.2): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = ((s / 4294967296) * 2 - 1) * a;
  }
  return out;
}

/** A small generated Llama-family checkpoint (every weight random, norms near 1). */
export function makeTinyModel(
  dir: string,
  cfg: RefConfig & Record<string, unknown>,
  opts: { qkvBias?: boolean; untiedHead?: boolean } = {},
): void {
  const H = cfg.hidden_size,
    nh = cfg.num_attention_heads,
    nkv = cfg.num_key_value_heads ?? nh;
  const hd = cfg.head_dim ?? H / nh,
    I = cfg.intermediate_size,
    V = cfg.vocab_size;
  let seed = 7;
  const w = (shape: number[], a = 0.3) => ({
    shape,
    data: randomWeights(
      shape.reduce((x, y) => x * y, 1),
      seed++,
      a,
    ),
  });
  const norm = (n: number) => {
    const d = randomWeights(n, seed++, 0.2);
    return { shape: [n], data: d.map((x) => 1 + x) };
  };
  const t: Record<string, { shape: number[]; data: Float32Array }> = { 'model.embed_tokens.weight': w([V, H], 1) };
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    t[p + 'input_layernorm.weight'] = norm(H);
    t[p + 'self_attn.q_proj.weight'] = w([nh * hd, H]);
    t[p + 'self_attn.k_proj.weight'] = w([nkv * hd, H]);
    t[p + 'self_attn.v_proj.weight'] = w([nkv * hd, H]);
    if (opts.qkvBias) {
      t[p + 'self_attn.q_proj.bias'] = w([nh * hd], 0.5);
      t[p + 'self_attn.k_proj.bias'] = w([nkv * hd], 0.5);
      t[p + 'self_attn.v_proj.bias'] = w([nkv * hd], 0.5);
    }
    t[p + 'self_attn.o_proj.weight'] = w([H, nh * hd]);
    t[p + 'post_attention_layernorm.weight'] = norm(H);
    t[p + 'mlp.gate_proj.weight'] = w([I, H]);
    t[p + 'mlp.up_proj.weight'] = w([I, H]);
    t[p + 'mlp.down_proj.weight'] = w([H, I]);
  }
  t['model.norm.weight'] = norm(H);
  if (opts.untiedHead) t['lm_head.weight'] = w([V, H], 0.5);
  writeCheckpoint(dir, cfg, t);
}
