// Phi-2 (model_type phi): one LayerNorm (weight and bias) feeding attention and MLP in parallel,
// RoPE on the first partial_rotary_factor of each head, biases on q/k/v/dense/fc1/fc2 and on
// lm_head, a plain (not gated) gelu_new MLP, final_layernorm.

import { geluOf } from './gemma';
import { type Architecture, everyLayer, linear } from './types';

export const phi: Architecture = {
  modelTypes: ['phi'],
  adds: 'LayerNorm with bias, attention ∥ MLP from one norm, partial rotary, gelu_new fc1/fc2, biases incl. lm_head',
  defaults: {
    partial_rotary_factor: 0.5,
    layer_norm_eps: 1e-5,
    hidden_act: 'gelu_new',
    tie_word_embeddings: false,
    rope_theta: 10000,
    bos_token_id: 1,
    qk_layernorm: false,
  },
  build(f, d) {
    f.refuseUnless('qk_layernorm', (v) => v === false || v === null, 'qk_layernorm false');
    // transformers' PhiAttention takes head_dim = hidden_size / num_attention_heads, whatever the config says.
    if (f.has('head_dim') && d.headDim * d.numHeads !== d.hiddenSize)
      f.fail(`field 'head_dim' (${d.headDim}) must be hidden_size / num_attention_heads for phi`);
    const H = d.hiddenSize,
      q = d.numHeads * d.headDim,
      kv = d.numKvHeads * d.headDim,
      I = d.intermediateSize;
    return {
      layout: {
        block: 'parallel',
        norm: 'layer',
        normEps: f.positiveNumber('layer_norm_eps', 1e-5),
        inputNorm: 'input_layernorm',
        qkv: [
          // llama.cpp converts Phi-2 with q/k/v apart or fused (attn_qkv): one input either way.
          linear('self_attn.q_proj', q, H, ['attn_q', 'attn_qkv'], 'required'),
          linear('self_attn.k_proj', kv, H, ['attn_k', 'attn_qkv'], 'required'),
          linear('self_attn.v_proj', kv, H, ['attn_v', 'attn_qkv'], 'required'),
        ],
        o: linear('self_attn.dense', H, q, ['attn_output'], 'required'),
        up: [linear('mlp.fc1', I, H, ['ffn_up'], 'required')],
        down: linear('mlp.fc2', H, I, ['ffn_down'], 'required'),
        activation: geluOf(f, ['hidden_act']),
        gated: false,
      },
      tensors: { embed: 'model.embed_tokens', finalNorm: 'model.final_layernorm', head: 'lm_head', headBias: true },
      rotaryFraction: f.fraction('partial_rotary_factor', 0.5),
      windows: everyLayer(d.numLayers, undefined),
    };
  },
};
