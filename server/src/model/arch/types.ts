// What a model family tells the forward pass: the decoder layer's shape as data (which norms,
// which linear weights under which names, which activation, how the residual stream is wired)
// and the few model-level numbers that differ (embedding scale, attention scale and
// soft-capping, sliding windows). forward.ts and generate.ts interpret it with one branch per
// layer; a family is one file under arch/ listed in arch/index.ts.

import type { ConfigFields } from './fields';

/** 'rms': x/rms(x)·w (Llama); 'rms1p': x/rms(x)·(1 + w) (Gemma; the weight is read as 1 + w);
 *  'layer': LayerNorm with weight and bias (Phi-2). */
export type NormKind = 'rms' | 'rms1p' | 'layer';

/** 'gelu_tanh': transformers' gelu_pytorch_tanh / gelu_new; 'gelu': the exact (erf) GELU. */
export type Activation = 'silu' | 'gelu_tanh' | 'gelu';

/** How a decoder layer adds its attention and MLP to the residual stream h:
 *  'serial' (Llama):     h += attn(n₁(h));        h += mlp(n₂(h))
 *  'sandwich' (Gemma 2): h += n₂(attn(n₁(h)));    h += n₄(mlp(n₃(h)))
 *  'parallel' (Phi-2):   h += attn(n₁(h)) + mlp(n₁(h)) */
export type BlockKind = 'serial' | 'sandwich' | 'parallel';

/** One linear weight of a decoder layer: model.layers.N.<name>.weight, [rows, cols]. */
export interface LinearSpec {
  /** Inside the layer: 'self_attn.q_proj', 'self_attn.qkv_proj', 'mlp.fc1' … */
  name: string;
  rows: number;
  cols: number;
  /** 'required': the family always has the bias; 'optional': read when the checkpoint holds it. */
  bias: 'required' | 'optional';
  /** llama.cpp's names of the same weight (blk.N.<gguf>.weight), for imatrix files. */
  gguf: readonly string[];
}

export interface LayerLayout {
  block: BlockKind;
  norm: NormKind;
  normEps: number;
  /** Norm tensors inside the layer (names without .weight). */
  inputNorm: string;
  /** serial: before the MLP; sandwich: after the attention. */
  postAttentionNorm?: string;
  /** sandwich only. */
  preFeedforwardNorm?: string;
  postFeedforwardNorm?: string;
  /** Their outputs side by side are q | k | v (three weights, or one fused qkv_proj). */
  qkv: readonly LinearSpec[];
  o: LinearSpec;
  /** Gated: their outputs side by side are gate | up (two weights, or one fused gate_up_proj);
   *  not gated: the one up-projection (fc1). */
  up: readonly LinearSpec[];
  down: LinearSpec;
  activation: Activation;
  gated: boolean;
}

/** Model-level tensor names (without .weight / .bias). */
export interface ModelTensors {
  embed: string;
  finalNorm: string;
  head: string;
  /** The head has a bias (Phi-2's lm_head). */
  headBias: boolean;
}

/** The decoder's dimensions, read before the family's own fields. */
export interface Dims {
  modelType: string;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
}

/** What a family's `build` returns; config.ts adds the dimensions, RoPE, the head and the BOS id. */
export interface FamilySpec {
  layout: LayerLayout;
  tensors: ModelTensors;
  /** RoPE on the first head_dim · this of each head (partial_rotary_factor); default 1. */
  rotaryFraction?: number;
  /** Embeddings multiplied by this (in float32) before the first layer (Gemma: √hidden). */
  embedScale?: number;
  /** Attention scores q·k · this; default 1/√head_dim. */
  attnScale?: number;
  /** Scores soft-capped to cap·tanh(s/cap) (Gemma 2). */
  attnSoftcap?: number;
  /** Logits soft-capped the same way (Gemma 2). */
  finalSoftcap?: number;
  /** Each layer's sliding window (tokens attend to the last `w` positions, themselves
   *  included); undefined entries attend to the whole prefix. */
  windows: readonly (number | undefined)[];
}

export interface Architecture {
  /** config.json model_type values this family runs. */
  modelTypes: readonly string[];
  /** What it adds to the Llama layer, for docs and messages. */
  adds: string;
  /** transformers' config defaults for fields config.json may leave out (null stays null). */
  defaults?: Record<string, unknown>;
  /** Reads the family's own fields, refusing any value that changes the forward pass and is
   *  not implemented. */
  build(f: ConfigFields, d: Dims): FamilySpec;
}

/** Helpers for family files. */
export const linear = (
  name: string,
  rows: number,
  cols: number,
  gguf: readonly string[],
  bias: LinearSpec['bias'] = 'optional',
): LinearSpec => ({ name, rows, cols, gguf, bias });

/** The same window on every layer (or none). */
export const everyLayer = (layers: number, window: number | undefined): (number | undefined)[] =>
  Array.from({ length: layers }, () => window);
