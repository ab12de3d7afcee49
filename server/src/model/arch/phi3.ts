// Phi-3: the Llama layer with q|k|v in one fused qkv_proj and gate|up in one fused
// gate_up_proj (LoftQ quantizes and PEFT targets them as they are; calibration has one input
// statistic per fused matrix), partial rotary where the config asks, and sliding_window on every
// layer when set (Phi-3-mini-4k: 2047).

import { type Architecture, everyLayer, linear } from './types';

export const phi3: Architecture = {
  modelTypes: ['phi3'],
  adds: 'fused qkv_proj and gate_up_proj, partial rotary, sliding window on every layer',
  defaults: {
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: false,
    bos_token_id: 1,
    partial_rotary_factor: 1.0,
  },
  build(f, d) {
    f.oneOf(['hidden_act'], ['silu'], 'silu');
    const H = d.hiddenSize,
      q = d.numHeads * d.headDim,
      kv = d.numKvHeads * d.headDim,
      I = d.intermediateSize;
    const window = f.has('sliding_window') ? f.positiveInt('sliding_window') : undefined;
    return {
      layout: {
        block: 'serial',
        norm: 'rms',
        normEps: f.positiveNumber('rms_norm_eps', 1e-5),
        inputNorm: 'input_layernorm',
        postAttentionNorm: 'post_attention_layernorm',
        qkv: [linear('self_attn.qkv_proj', q + 2 * kv, H, ['attn_qkv'])],
        o: linear('self_attn.o_proj', H, q, ['attn_output']),
        up: [linear('mlp.gate_up_proj', 2 * I, H, ['ffn_up'])],
        down: linear('mlp.down_proj', H, I, ['ffn_down']),
        activation: 'silu',
        gated: true,
      },
      tensors: { embed: 'model.embed_tokens', finalNorm: 'model.norm', head: 'lm_head', headBias: false },
      rotaryFraction: f.fraction('partial_rotary_factor', 1.0),
      windows: everyLayer(d.numLayers, window),
    };
  },
};
