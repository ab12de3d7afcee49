// Gemma: the Llama layer with embeddings scaled by √hidden (in float32, as transformers
// computes it), RMSNorm times (1 + w), a GeGLU MLP (tanh-approximated GELU unless the config
// names the exact one), head_dim independent of hidden/heads, and the head tied to the embedding.

import type { ConfigFields } from './fields';
import { type Activation, type Architecture, type Dims, everyLayer, type LayerLayout, linear } from './types';

/** transformers' GELU names → what the forward pass computes. */
const GELUS: Record<string, Activation> = { gelu_pytorch_tanh: 'gelu_tanh', gelu_new: 'gelu_tanh', gelu: 'gelu' };

/** The GELU a config names: hidden_activation (Gemma's field) first, then hidden_act. */
export function geluOf(f: ConfigFields, keys: readonly string[]): Activation {
  return GELUS[f.oneOf(keys, Object.keys(GELUS), 'gelu_pytorch_tanh').value];
}

/** Gemma's layer (Gemma 2 adds its norms to it). */
export function gemmaLayout(f: ConfigFields, d: Dims): LayerLayout {
  const H = d.hiddenSize,
    q = d.numHeads * d.headDim,
    kv = d.numKvHeads * d.headDim,
    I = d.intermediateSize;
  const bias = f.optionalBool('attention_bias') === true ? 'required' : 'optional';
  return {
    block: 'serial',
    norm: 'rms1p',
    normEps: f.positiveNumber('rms_norm_eps', 1e-6),
    inputNorm: 'input_layernorm',
    postAttentionNorm: 'post_attention_layernorm',
    qkv: [
      linear('self_attn.q_proj', q, H, ['attn_q'], bias),
      linear('self_attn.k_proj', kv, H, ['attn_k'], bias),
      linear('self_attn.v_proj', kv, H, ['attn_v'], bias),
    ],
    o: linear('self_attn.o_proj', H, q, ['attn_output'], bias),
    up: [linear('mlp.gate_proj', I, H, ['ffn_gate']), linear('mlp.up_proj', I, H, ['ffn_up'])],
    down: linear('mlp.down_proj', H, I, ['ffn_down']),
    activation: geluOf(f, ['hidden_activation', 'hidden_act']),
    gated: true,
  };
}

/** GemmaConfig's defaults for the fields that shape the model. */
export const GEMMA_DEFAULTS = {
  head_dim: 256,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  tie_word_embeddings: true,
  bos_token_id: 2,
};

export const gemma: Architecture = {
  modelTypes: ['gemma'],
  adds: 'embeddings × √hidden, RMSNorm × (1 + w), GeGLU (tanh GELU), free head_dim, tied head',
  defaults: GEMMA_DEFAULTS,
  build(f, d) {
    return {
      layout: gemmaLayout(f, d),
      tensors: { embed: 'model.embed_tokens', finalNorm: 'model.norm', head: 'lm_head', headBias: false },
      embedScale: Math.fround(Math.sqrt(d.hiddenSize)),
      windows: everyLayer(d.numLayers, undefined),
    };
  },
};
