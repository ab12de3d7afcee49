// Llama, Mistral and Qwen2: RMSNorm, q/k/v/o, SiLU-gated MLP, RoPE. Qwen2 always has q/k/v
// biases; Llama has q/k/v/o biases with attention_bias and MLP biases with mlp_bias. Mistral
// (and Qwen2 with use_sliding_window) attend within sliding_window on every layer.

import { type Architecture, everyLayer, linear } from './types';

export const llama: Architecture = {
  modelTypes: ['llama', 'mistral', 'qwen2'],
  adds: 'the reference layer: RMSNorm, q/k/v/o, SiLU-gated MLP, RoPE (Qwen2: q/k/v biases; Mistral: sliding window)',
  build(f, d) {
    f.oneOf(['hidden_act'], ['silu'], 'silu');
    const H = d.hiddenSize,
      q = d.numHeads * d.headDim,
      kv = d.numKvHeads * d.headDim,
      I = d.intermediateSize;
    const isLlama = d.modelType === 'llama';
    const attnBias = isLlama && f.optionalBool('attention_bias') === true;
    const qkvBias = d.modelType === 'qwen2' || attnBias ? 'required' : 'optional';
    const mlpBias = isLlama && f.optionalBool('mlp_bias') === true ? 'required' : 'optional';
    const useSw =
      d.modelType === 'mistral' || (d.modelType === 'qwen2' && f.optionalBool('use_sliding_window') === true);
    const window = useSw && f.has('sliding_window') ? f.positiveInt('sliding_window') : undefined;
    return {
      layout: {
        block: 'serial',
        norm: 'rms',
        normEps: f.positiveNumber('rms_norm_eps', 1e-6),
        inputNorm: 'input_layernorm',
        postAttentionNorm: 'post_attention_layernorm',
        qkv: [
          linear('self_attn.q_proj', q, H, ['attn_q'], qkvBias),
          linear('self_attn.k_proj', kv, H, ['attn_k'], qkvBias),
          linear('self_attn.v_proj', kv, H, ['attn_v'], qkvBias),
        ],
        o: linear('self_attn.o_proj', H, q, ['attn_output'], attnBias ? 'required' : 'optional'),
        up: [linear('mlp.gate_proj', I, H, ['ffn_gate'], mlpBias), linear('mlp.up_proj', I, H, ['ffn_up'], mlpBias)],
        down: linear('mlp.down_proj', H, I, ['ffn_down'], mlpBias),
        activation: 'silu',
        gated: true,
      },
      tensors: { embed: 'model.embed_tokens', finalNorm: 'model.norm', head: 'lm_head', headBias: false },
      windows: everyLayer(d.numLayers, window),
    };
  },
};
