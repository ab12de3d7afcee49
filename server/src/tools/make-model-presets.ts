// Llama-shaped model presets for the checkpoint generator: sizes, the tensor list in
// Hugging Face's state_dict order, and which synthetic traits each weight gets. The traits
// vary by layer and module on purpose, so that per-matrix error differs and the planner has
// something to find.

import type { SynthTraits } from './synth';

export interface LlamaShape {
  layers: number;
  hidden: number;
  intermediate: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  maxPositions: number;
  tieEmbeddings: boolean;
}

export const PRESETS: Record<string, LlamaShape> = {
  tiny: {
    layers: 4,
    hidden: 128,
    intermediate: 344,
    heads: 4,
    kvHeads: 2,
    vocab: 512,
    maxPositions: 256,
    tieEmbeddings: false,
  },
  'tinyllama-1.1b': {
    layers: 22,
    hidden: 2048,
    intermediate: 5632,
    heads: 32,
    kvHeads: 4,
    vocab: 32000,
    maxPositions: 2048,
    tieEmbeddings: false,
  },
  'llama-7b': {
    layers: 32,
    hidden: 4096,
    intermediate: 11008,
    heads: 32,
    kvHeads: 32,
    vocab: 32000,
    maxPositions: 4096,
    tieEmbeddings: false,
  },
};

export type TensorKind = 'linear' | 'embedding' | 'norm';

export interface TensorJob {
  name: string;
  shape: number[];
  kind: TensorKind;
  /** Only for kind 'linear'. */
  traits?: Partial<SynthTraits>;
}

const ATTN = ['q_proj', 'k_proj', 'v_proj', 'o_proj'] as const;
const MLP = ['gate_proj', 'up_proj', 'down_proj'] as const;
export type Module = (typeof ATTN)[number] | (typeof MLP)[number];

/**
 * Traits of one linear weight. Real checkpoints show heavier tails and stronger outlier
 * channels in the first and last blocks and in down_proj, and a more pronounced low-rank
 * structure in q/k; this mimics those patterns, so the same bits cost different error in
 * different places.
 */
export function moduleTraits(layer: number, layers: number, module: Module): Partial<SynthTraits> {
  const edge = layer === 0 || layer === layers - 1;
  const t: Partial<SynthTraits> = { df: 6, decay: 0.7, spikeGain: 1, outliers: 4, outlierGain: [4, 12] };
  if (module === 'q_proj' || module === 'k_proj') Object.assign(t, { decay: 0.5, spikeGain: 2 });
  if (module === 'v_proj' || module === 'o_proj') Object.assign(t, { df: 8, outliers: 2 });
  if (module === 'down_proj') Object.assign(t, { df: 4, outliers: 8, outlierGain: [8, 20] });
  if (edge) Object.assign(t, { df: Math.min(t.df!, 3.5), outlierGain: [2 * t.outlierGain![0], 2 * t.outlierGain![1]] });
  // Every third block a little heavier-tailed than its neighbours.
  if (layer % 3 === 1 && !edge) t.df = t.df! - 1;
  return t;
}

/** Every tensor of the model, in the order Hugging Face's state_dict lists them. */
export function tensorJobs(s: LlamaShape): TensorJob[] {
  const head = s.hidden / s.heads;
  const kv = s.kvHeads * head;
  const out: TensorJob[] = [{ name: 'model.embed_tokens.weight', shape: [s.vocab, s.hidden], kind: 'embedding' }];
  const shapes: Record<Module, [number, number]> = {
    q_proj: [s.hidden, s.hidden],
    k_proj: [kv, s.hidden],
    v_proj: [kv, s.hidden],
    o_proj: [s.hidden, s.hidden],
    gate_proj: [s.intermediate, s.hidden],
    up_proj: [s.intermediate, s.hidden],
    down_proj: [s.hidden, s.intermediate],
  };
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}`;
    for (const m of ATTN)
      out.push({
        name: `${p}.self_attn.${m}.weight`,
        shape: shapes[m],
        kind: 'linear',
        traits: moduleTraits(l, s.layers, m),
      });
    for (const m of MLP)
      out.push({
        name: `${p}.mlp.${m}.weight`,
        shape: shapes[m],
        kind: 'linear',
        traits: moduleTraits(l, s.layers, m),
      });
    out.push({ name: `${p}.input_layernorm.weight`, shape: [s.hidden], kind: 'norm' });
    out.push({ name: `${p}.post_attention_layernorm.weight`, shape: [s.hidden], kind: 'norm' });
  }
  out.push({ name: 'model.norm.weight', shape: [s.hidden], kind: 'norm' });
  if (!s.tieEmbeddings) out.push({ name: 'lm_head.weight', shape: [s.vocab, s.hidden], kind: 'embedding' });
  return out;
}

/** config.json of a LlamaForCausalLM with these sizes. */
export function llamaConfig(s: LlamaShape): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: s.hidden,
    intermediate_size: s.intermediate,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    head_dim: s.hidden / s.heads,
    vocab_size: s.vocab,
    max_position_embeddings: s.maxPositions,
    hidden_act: 'silu',
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    initializer_range: 0.02,
    attention_bias: false,
    mlp_bias: false,
    tie_word_embeddings: s.tieEmbeddings,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: 'bfloat16',
    use_cache: true,
    transformers_version: '4.44.0',
  };
}
