// Tiny valid model folders for the model-input fuzz families: config.json of one of the forward
// pass's families (small dimensions), a model.safetensors holding exactly the tensors that config
// asks for (derived from the parsed layout, so every family in arch/ can be covered), and a small
// BPE tokenizer.json whose ids fit the vocabulary. Built from a name alone, so a worker can
// rebuild the same bytes; the cache (ensureBase) is written to a temp folder and renamed.

import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { DType, fromFloat32 } from '../../checkpoint';
import { parseModelConfig, type ModelConfig } from '../../model/config';
import { layerLinears, layerTensorName } from '../../model/weights';
import { dataOf, entriesOf, fileBytes, FuzzModel, serializeEntries } from './model';
import { Rng } from './rng';

/** Dimensions shared by every base: q/k/v/o and the MLP are 16–32 wide, blocks of 8 fit. */
const DIMS = {
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  vocab_size: 48,
  max_position_embeddings: 4096,
  bos_token_id: 1,
};

/** config.json of each base (families from arch/, a few of their options). */
const CONFIGS: Record<string, Record<string, unknown>> = {
  llama: { model_type: 'llama', ...DIMS, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false },
  'llama-tied-bf16': { model_type: 'llama', ...DIMS, rope_theta: 500000, tie_word_embeddings: true },
  'llama3-rope': {
    model_type: 'llama',
    ...DIMS,
    rope_theta: 500000,
    rope_scaling: {
      rope_type: 'llama3',
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 16,
    },
    tie_word_embeddings: false,
  },
  qwen2: { model_type: 'qwen2', ...DIMS, rope_theta: 1e6, tie_word_embeddings: false },
  mistral: { model_type: 'mistral', ...DIMS, sliding_window: 5, tie_word_embeddings: false },
  phi3: { model_type: 'phi3', ...DIMS, tie_word_embeddings: false },
  gemma: { model_type: 'gemma', ...DIMS, head_dim: 8, hidden_activation: 'gelu_pytorch_tanh' },
  gemma2: {
    model_type: 'gemma2',
    ...DIMS,
    head_dim: 8,
    query_pre_attn_scalar: 8,
    attn_logit_softcapping: 50,
    final_logit_softcapping: 30,
    sliding_window: 4,
  },
  phi: { model_type: 'phi', ...DIMS, partial_rotary_factor: 0.5, hidden_act: 'gelu_new', tie_word_embeddings: false },
};

export const BASE_NAMES = Object.keys(CONFIGS);

/** A base model folder and what the mutations need to know about it. */
export interface TinyModel {
  name: string;
  /** The folder: config.json, model.safetensors, tokenizer.json. */
  dir: string;
  config: Record<string, unknown>;
  parsed: ModelConfig;
  /** An uncalibrated LoftQ output of it, for eval when the case's own quantize refused (filled by
   *  the consumer). */
  outDir: string;
}

export function baseConfig(name: string): Record<string, unknown> {
  return structuredClone(CONFIGS[name]);
}

/** Every tensor the forward pass reads for this config, with its shape (the layout decides). */
function tensorShapes(c: ModelConfig, tied: boolean): [string, number[]][] {
  const H = c.hiddenSize,
    V = c.vocabSize;
  const out: [string, number[]][] = [[`${c.tensors.embed}.weight`, [V, H]]];
  const L = c.layout;
  const norm = (prefix: string) => {
    out.push([`${prefix}.weight`, [H]]);
    if (L.norm === 'layer') out.push([`${prefix}.bias`, [H]]);
  };
  for (let layer = 0; layer < c.numLayers; layer++) {
    for (const n of [L.inputNorm, L.postAttentionNorm, L.preFeedforwardNorm, L.postFeedforwardNorm])
      if (n !== undefined) norm(`model.layers.${layer}.${n}`);
    for (const spec of layerLinears(c)) {
      out.push([layerTensorName(layer, spec), [spec.rows, spec.cols]]);
      if (spec.bias === 'required') out.push([`model.layers.${layer}.${spec.name}.bias`, [spec.rows]]);
    }
  }
  norm(c.tensors.finalNorm);
  if (!tied) {
    out.push([`${c.tensors.head}.weight`, [V, H]]);
    if (c.tensors.headBias) out.push([`${c.tensors.head}.bias`, [V]]);
  }
  return out;
}

/** Weights of a model that computes something (not all zeros): linear ±1/√cols, norms near 1
 *  (near 0 for Gemma's 1 + w), biases and embeddings small. */
function modelOf(name: string, c: ModelConfig, json: Record<string, unknown>): FuzzModel {
  const rng = new Rng(name.split('').reduce((h, ch) => Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0, 2166136261));
  const dtype: DType = name.includes('bf16') ? 'BF16' : 'F32';
  const tied = json.tie_word_embeddings !== false;
  return {
    tensors: tensorShapes(c, tied).map(([tensor, shape]) => {
      const n = shape.reduce((a, b) => a * b, 1);
      const x = new Float32Array(n);
      const isNorm = shape.length === 1 && !tensor.endsWith('.bias');
      const scale = shape.length === 2 ? 1 / Math.sqrt(shape[1]) : 0.1;
      for (let i = 0; i < n; i++) {
        const u = (rng.next() - 0.5) * 2 * scale;
        x[i] = isNorm ? (c.layout.norm === 'rms1p' ? u : 1 + u) : u;
      }
      return { name: tensor, dtype, shape, data: fromFloat32(dtype, x) };
    }),
  };
}

/** Characters of the tokenizer (ids 4.. in this order), then the merges' results. */
const CHARS = 'abcdefghijklmnopqrstuvwxyz.,!'.split('');
const MERGES: [string, string][] = [
  ['▁', 't'],
  ['h', 'e'],
  ['▁t', 'he'],
];

function tokenizerVocab(): Record<string, number> {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2, '▁': 3 };
  for (const ch of CHARS) vocab[ch] = Object.keys(vocab).length;
  for (const [a, b] of MERGES) vocab[a + b] = Object.keys(vocab).length;
  return vocab;
}

/** A Llama-style tokenizer.json: ▁-prefixing normalizer, BPE, <s> prepended; this tiny model's
 *  vocabulary and merges unless others are given (the tests' calibration files give theirs). */
export function tokenizerJson(
  vocab: Record<string, number> = tokenizerVocab(),
  merges: string[] = MERGES.map(([a, b]) => `${a} ${b}`),
): Record<string, unknown> {
  const special = (id: number, content: string) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '▁' },
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: null,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
}

/** Text the tokenizer covers: words of its characters, sentences, blank-line paragraphs. */
export function sampleText(rng: Rng, paragraphs: number): string {
  const word = () => Array.from({ length: rng.int(1, 7) }, () => rng.pick(CHARS.slice(0, 26))).join('');
  return Array.from(
    { length: paragraphs },
    () => Array.from({ length: rng.int(2, 12) }, () => (rng.chance(0.2) ? 'the' : word())).join(' ') + '.',
  ).join('\n\n');
}

/** Writes base `name` into DIR (config.json, model.safetensors, tokenizer.json). */
export async function writeBase(name: string, dir: string): Promise<void> {
  const json = baseConfig(name);
  const parsed = parseModelConfig(path.join(dir, 'config.json'), json);
  await fsp.mkdir(dir, { recursive: true });
  const m = modelOf(name, parsed, json);
  await fsp.writeFile(path.join(dir, 'model.safetensors'), fileBytes(serializeEntries(entriesOf(m)), dataOf(m)));
  await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify(json, null, 2));
  await fsp.writeFile(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson()));
}

/** The base `name` under ROOT/bases/, written once (temp folder + rename: a worker killed
 *  meanwhile leaves no half-written base for the next). */
export async function ensureBase(root: string, name: string): Promise<TinyModel> {
  const bases = path.join(root, 'bases');
  const dir = path.join(bases, name);
  if (!existsSync(dir)) {
    const tmp = path.join(bases, `.tmp-${name}-${process.pid}-${Math.random().toString(36).slice(2)}`);
    await writeBase(name, tmp);
    await fsp.rename(tmp, dir).catch(async (e) => {
      await fsp.rm(tmp, { recursive: true, force: true });
      if (!existsSync(dir)) throw e;
    });
  }
  const config = baseConfig(name);
  return {
    name,
    dir,
    config,
    parsed: parseModelConfig(path.join(dir, 'config.json'), config),
    outDir: path.join(bases, `${name}.out`),
  };
}

/** A copy of the base's files in DIR, for a case to mutate. */
export async function copyBase(base: TinyModel, dir: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json'])
    await fsp.copyFile(path.join(base.dir, f), path.join(dir, f));
}
