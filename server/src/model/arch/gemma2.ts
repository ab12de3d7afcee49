// Gemma 2: Gemma plus a norm after the attention and around the MLP (pre/post feed-forward),
// attention scores scaled by query_pre_attn_scalar^-½ and soft-capped (attn_logit_softcapping),
// logits soft-capped (final_logit_softcapping), and a sliding window on every other layer
// (layers 0, 2, 4, …, as transformers' Gemma2Attention has it).

import { GEMMA_DEFAULTS, gemmaLayout } from './gemma';
import type { Architecture } from './types';

export const gemma2: Architecture = {
  modelTypes: ['gemma2'],
  adds:
    'Gemma plus post-attention and pre/post feed-forward norms, attention and final logit soft-capping, ' +
    'query_pre_attn_scalar, sliding window on alternate layers',
  defaults: {
    ...GEMMA_DEFAULTS,
    query_pre_attn_scalar: 256,
    sliding_window: 4096,
    final_logit_softcapping: 30.0,
    attn_logit_softcapping: 50.0,
  },
  build(f, d) {
    const layout = gemmaLayout(f, d);
    layout.block = 'sandwich';
    layout.preFeedforwardNorm = 'pre_feedforward_layernorm';
    layout.postFeedforwardNorm = 'post_feedforward_layernorm';
    const window = f.has('sliding_window') ? f.positiveInt('sliding_window') : undefined;
    return {
      layout,
      tensors: { embed: 'model.embed_tokens', finalNorm: 'model.norm', head: 'lm_head', headBias: false },
      embedScale: Math.fround(Math.sqrt(d.hiddenSize)),
      attnScale: 1 / Math.sqrt(f.positiveNumber('query_pre_attn_scalar', 256)),
      attnSoftcap: f.optionalPositive('attn_logit_softcapping'),
      finalSoftcap: f.optionalPositive('final_logit_softcapping'),
      windows: Array.from({ length: d.numLayers }, (_, l) => (l % 2 === 0 ? window : undefined)),
    };
  },
};
