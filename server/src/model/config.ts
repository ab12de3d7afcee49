// config.json of a Llama-family decoder (llama, mistral, qwen2; TinyLlama is llama) read into
// the few numbers the forward pass needs. Anything else is refused in one line naming the
// file and the model_type; a missing or invalid field is named too.

import * as path from 'node:path';
import { brief, CheckpointError, quote } from '../checkpoint/errors';
import { readSideFile } from '../checkpoint/sidefile';

export const SUPPORTED_MODEL_TYPES = ['llama', 'mistral', 'qwen2'] as const;
export type ModelType = (typeof SUPPORTED_MODEL_TYPES)[number];

export interface ModelConfig {
  file: string;
  modelType: ModelType;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  ropeTheta: number;
  rmsNormEps: number;
  /** undefined: the config does not say (the checkpoint's lm_head.weight decides). */
  tieWordEmbeddings?: boolean;
  /** Biases on q/k/v are expected (Qwen2 always; Llama with attention_bias). */
  qkvBias: boolean;
  /** Tokens attend at most this far back (Mistral, Qwen2 with use_sliding_window). */
  slidingWindow?: number;
  /** The token a generated sequence starts from (bos_token_id; 1, Llama's <s>, when absent). */
  bosTokenId: number;
}

type Json = Record<string, unknown>;

function positiveInt(file: string, c: Json, key: string, fallback?: number): number {
  const v = c[key] ?? fallback;
  if (v === undefined) throw new CheckpointError('metadata', file, `field '${key}' is missing`);
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
    throw new CheckpointError('metadata', file, `field '${key}' must be a positive integer (found ${brief(v)})`);
  }
  return v;
}

function positiveNumber(file: string, c: Json, key: string, fallback: number): number {
  const v = c[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new CheckpointError('metadata', file, `field '${key}' must be a positive number (found ${brief(v)})`);
  }
  return v;
}

function optionalBool(file: string, c: Json, key: string): boolean | undefined {
  const v = c[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean')
    throw new CheckpointError('metadata', file, `field '${key}' must be true or false (found ${brief(v)})`);
  return v;
}

function bosTokenId(file: string, c: Json): number {
  const v = c.bos_token_id ?? 1;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    throw new CheckpointError('metadata', file, `field 'bos_token_id' must be an integer ≥ 0 (found ${brief(v)})`);
  }
  return v;
}

/** Parses a config.json's object (exported for tests that build configs in memory). */
export function parseModelConfig(file: string, c: unknown): ModelConfig {
  if (typeof c !== 'object' || c === null || Array.isArray(c))
    throw new CheckpointError('metadata', file, 'is not a JSON object');
  const j = c as Json;
  const mt = j.model_type;
  if (typeof mt !== 'string')
    throw new CheckpointError(
      'metadata',
      file,
      `field 'model_type' is missing (the forward pass runs ${SUPPORTED_MODEL_TYPES.join(', ')})`,
    );
  if (!(SUPPORTED_MODEL_TYPES as readonly string[]).includes(mt)) {
    throw new CheckpointError(
      'metadata',
      file,
      `model_type '${quote(mt)}' is not supported by the forward pass (${SUPPORTED_MODEL_TYPES.join(', ')})`,
    );
  }
  const act = j.hidden_act ?? 'silu';
  if (act !== 'silu')
    throw new CheckpointError('metadata', file, `field 'hidden_act' must be "silu" (found ${brief(act)})`);
  const rs = j.rope_scaling;
  if (rs !== undefined && rs !== null)
    throw new CheckpointError('metadata', file, `field 'rope_scaling' is not supported (found ${brief(rs)})`);
  const hiddenSize = positiveInt(file, j, 'hidden_size');
  const numHeads = positiveInt(file, j, 'num_attention_heads');
  const numKvHeads = positiveInt(file, j, 'num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new CheckpointError(
      'metadata',
      file,
      `field 'num_key_value_heads' (${numKvHeads}) must divide num_attention_heads (${numHeads})`,
    );
  }
  if (j.head_dim === undefined && hiddenSize % numHeads !== 0) {
    throw new CheckpointError(
      'metadata',
      file,
      `field 'num_attention_heads' (${numHeads}) must divide hidden_size (${hiddenSize})`,
    );
  }
  const headDim = positiveInt(file, j, 'head_dim', hiddenSize / numHeads);
  if (headDim % 2 !== 0)
    throw new CheckpointError('metadata', file, `field 'head_dim' must be even for RoPE (found ${headDim})`);
  const modelType = mt as ModelType;
  const attnBias = optionalBool(file, j, 'attention_bias') ?? false;
  const useSw =
    modelType === 'mistral' || (modelType === 'qwen2' && optionalBool(file, j, 'use_sliding_window') === true);
  const sw = j.sliding_window;
  return {
    file,
    modelType,
    hiddenSize,
    intermediateSize: positiveInt(file, j, 'intermediate_size'),
    numLayers: positiveInt(file, j, 'num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: positiveInt(file, j, 'vocab_size'),
    ropeTheta: positiveNumber(file, j, 'rope_theta', 10000),
    rmsNormEps: positiveNumber(file, j, 'rms_norm_eps', 1e-6),
    tieWordEmbeddings: optionalBool(file, j, 'tie_word_embeddings'),
    qkvBias: modelType === 'qwen2' || attnBias,
    slidingWindow: useSw && sw !== undefined && sw !== null ? positiveInt(file, j, 'sliding_window') : undefined,
    bosTokenId: bosTokenId(file, j),
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
