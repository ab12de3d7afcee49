// config.json of a decoder the forward pass runs, read into the numbers and the layer layout
// it needs. Which model_types run, and what each family adds, is the architecture table
// (arch/index.ts); anything else is refused in one line naming the file, the model_type and the
// supported list, as is a field that changes the forward pass and is not implemented
// (rope_scaling types: rope.ts). A missing or invalid field is named too.

import * as path from 'node:path';
import { brief, CheckpointError, quote } from '../checkpoint/errors';
import { readSideFile } from '../checkpoint/sidefile';
import { ConfigFields, type Json } from './arch/fields';
import { architectureOf, SUPPORTED_MODEL_TYPES } from './arch/index';
import type { Dims, LayerLayout, ModelTensors } from './arch/types';
import { parseRope, type RopeSpec } from './rope';

export { SUPPORTED_MODEL_TYPES };
export type ModelType = string;

/** The decoder's dimensions (arch/types.ts's Dims, read first) and what the family adds. */
export interface ModelConfig extends Dims {
  file: string;
  ropeTheta: number;
  /** The layers' norm epsilon (rms_norm_eps, or layer_norm_eps for LayerNorm families). */
  rmsNormEps: number;
  /** undefined: the config does not say (the checkpoint's head tensor decides). */
  tieWordEmbeddings?: boolean;
  /** Biases on q/k/v are expected (Qwen2 always; Llama with attention_bias; Phi-2). */
  qkvBias: boolean;
  /** Tokens attend at most this far back on the layers `windows` gives it to. */
  slidingWindow?: number;
  /** The token a generated sequence starts from (bos_token_id; 1, Llama's <s>, when absent). */
  bosTokenId: number;
  /** RoPE: base, rotary dimensions, rope_scaling. */
  rope: RopeSpec;
  /** The decoder layer as data (arch/types.ts). */
  layout: LayerLayout;
  tensors: ModelTensors;
  /** Embeddings × this before the first layer (Gemma). */
  embedScale?: number;
  /** Attention scores q·k × this (1/√head_dim unless the family says otherwise). */
  attnScale: number;
  attnSoftcap?: number;
  finalSoftcap?: number;
  /** Each layer's sliding window, undefined where it attends to the whole prefix. */
  windows: readonly (number | undefined)[];
}

/** Layers config.json may describe. The count sizes per-layer tables (sliding windows) while the
 *  file is parsed, before the checkpoint is consulted (checkConfigAgainstCheckpoint), and 2^31
 *  layers was a fatal out-of-memory there; the deepest published decoders have ~130. */
export const MAX_LAYERS = 2 ** 24;

function bosTokenId(f: ConfigFields): number {
  const v = f.json.bos_token_id ?? 1;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    f.fail(`field 'bos_token_id' must be an integer ≥ 0 (found ${brief(v)})`);
  }
  return v as number;
}

/** Parses a config.json's object (exported for tests that build configs in memory). */
export function parseModelConfig(file: string, c: unknown): ModelConfig {
  if (typeof c !== 'object' || c === null || Array.isArray(c))
    throw new CheckpointError('metadata', file, 'is not a JSON object');
  const supported = SUPPORTED_MODEL_TYPES.join(', ');
  const mt = (c as Json).model_type;
  if (typeof mt !== 'string')
    throw new CheckpointError('metadata', file, `field 'model_type' is missing (the forward pass runs ${supported})`);
  const arch = architectureOf(mt);
  if (!arch) {
    throw new CheckpointError(
      'metadata',
      file,
      `model_type '${quote(mt)}' is not supported by the forward pass (supported: ${supported})`,
    );
  }
  // transformers' config defaults fill what the file leaves out (an explicit null stays null).
  const f = new ConfigFields(file, { ...arch.defaults, ...(c as Json) });
  const hiddenSize = f.positiveInt('hidden_size');
  const numHeads = f.positiveInt('num_attention_heads');
  const numKvHeads = f.positiveInt('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0)
    f.fail(`field 'num_key_value_heads' (${numKvHeads}) must divide num_attention_heads (${numHeads})`);
  if (!f.has('head_dim') && hiddenSize % numHeads !== 0)
    f.fail(`field 'num_attention_heads' (${numHeads}) must divide hidden_size (${hiddenSize})`);
  const headDim = f.positiveInt('head_dim', hiddenSize / numHeads);
  const numLayers = f.positiveInt('num_hidden_layers');
  if (numLayers > MAX_LAYERS)
    f.fail(`field 'num_hidden_layers' is ${numLayers}; at most ${MAX_LAYERS} layers are read (another file?)`);
  const dims = {
    modelType: mt,
    hiddenSize,
    intermediateSize: f.positiveInt('intermediate_size'),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: f.positiveInt('vocab_size'),
  };
  const spec = arch.build(f, dims);
  const fraction = spec.rotaryFraction ?? 1;
  // transformers: int(head_dim · partial_rotary_factor) dimensions rotated, in pairs.
  const rotaryDim = Math.floor(headDim * fraction);
  if (rotaryDim % 2 !== 0 || rotaryDim === 0) {
    f.fail(
      fraction === 1
        ? `field 'head_dim' must be even for RoPE (found ${headDim})`
        : `field 'partial_rotary_factor' (${fraction}) leaves ${rotaryDim} of head_dim ${headDim} rotated; ` +
            'RoPE needs an even number',
    );
  }
  const rope = parseRope(f, rotaryDim);
  const windows = spec.windows;
  return {
    file,
    ...dims,
    ropeTheta: rope.theta,
    rmsNormEps: spec.layout.normEps,
    tieWordEmbeddings: f.optionalBool('tie_word_embeddings'),
    qkvBias: spec.layout.qkv.every((l) => l.bias === 'required'),
    slidingWindow: windows.find((w) => w !== undefined),
    bosTokenId: bosTokenId(f),
    rope,
    layout: spec.layout,
    tensors: spec.tensors,
    embedScale: spec.embedScale,
    attnScale: spec.attnScale ?? 1 / Math.sqrt(headDim),
    attnSoftcap: spec.attnSoftcap,
    finalSoftcap: spec.finalSoftcap,
    windows,
  };
}

/** Reads FOLDER/config.json. Throws CheckpointError naming config.json. */
export async function readModelConfig(folder: string): Promise<ModelConfig> {
  const file = path.join(folder, 'config.json');
  let text: string;
  try {
    // The shard rules (checkpoint/sidefile.ts): a regular file inside the folder, size-capped, never a FIFO.
    const bytes = await readSideFile(folder, 'config.json');
    if (!bytes) throw Object.assign(new Error('absent'), { code: 'ENOENT' });
    text = new TextDecoder().decode(bytes);
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT')
      throw new CheckpointError('not-found', file, "does not exist (the forward pass needs the model's config.json)");
    throw new CheckpointError('unreadable', file, `cannot be read (${code ?? (e as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError('header-json', file, `is not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  return parseModelConfig(file, json);
}
