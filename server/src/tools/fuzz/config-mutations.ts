// Mutations of config.json's numbers (the forward pass sizes everything by them): layer counts,
// widths, heads, vocabulary, rope_theta and rope_scaling, norm epsilons, the BOS id, windows and
// soft-caps set to 0, negative, 1e-300, 1e300, 1e400, "NaN"-like strings, fractions, 2³¹, 2⁵³,
// wrong types; several at once; and config.json itself not JSON, nested deep or missing. The
// calibration tokens and eval tokens are valid: what differs is the model's description.
// A width, the layer count or the vocabulary that differs from the checkpoint's tensors must be
// refused (before anything is allocated by it); any other value may run, but only to finite
// statistics, adapters and metrics.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Expect, InputCtx, InputCase, InputMutator, validTokenFile } from './inputs';
import { Raw, serialize } from './model';
import type { Rng } from './rng';

/** Fields the checkpoint's tensor shapes pin down: any other number is another model. */
const PINNED = ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'vocab_size'];
const NUMBERS = [
  ...PINNED,
  'num_attention_heads',
  'num_key_value_heads',
  'head_dim',
  'rope_theta',
  'rms_norm_eps',
  'layer_norm_eps',
  'max_position_embeddings',
  'bos_token_id',
  'eos_token_id',
  'sliding_window',
  'partial_rotary_factor',
  'query_pre_attn_scalar',
  'attn_logit_softcapping',
  'final_logit_softcapping',
];

/** Hostile values for a field whose value is `base` (a number, or undefined when absent). */
function valueFor(rng: Rng, base: unknown): unknown {
  const b = typeof base === 'number' ? base : 16;
  return rng.pick<unknown>([
    0,
    -1,
    1,
    2,
    0.5,
    1.5,
    b + 1,
    b - 1,
    2 * b,
    b / 2,
    b + 0.5,
    1e-300,
    1e300,
    -1e300,
    2 ** 31,
    2 ** 53,
    1e6,
    1e7,
    new Raw('1e400'),
    new Raw('-1e400'),
    new Raw(`${b}.0`),
    new Raw(`${b}e0`),
    'NaN',
    'Infinity',
    String(b),
    null,
    true,
    [],
    {},
    [b],
  ]);
}

/** The number a JSON value reads as, or undefined when it is not a finite number. */
function numberOf(v: unknown): number | undefined {
  const x = v instanceof Raw ? Number(v.text) : v;
  return typeof x === 'number' && Number.isFinite(x) ? x : undefined;
}

/** Writes config.json; calibration reads valid tokens or, for some cases, samples its own from the
 *  model (--calib-generate: the BOS id, the KV cache and sampling see the numbers too). */
async function withConfig(c: InputCtx, text: string, expect?: Expect): Promise<InputCase> {
  await fsp.writeFile(path.join(c.model, 'config.json'), text);
  const file = await validTokenFile(c);
  const calibration = c.rng.chance(0.3)
    ? { generate: { sequences: c.rng.int(1, 3), length: c.rng.int(2, 24), seed: c.rng.int(0, 1000) } }
    : { file };
  return { calibration, evalTokens: file, ...(expect ? { expect } : {}) };
}

const mutator = (name: string, expect: Expect, make: (c: InputCtx) => Promise<InputCase>) =>
  ({ name, family: 'config', expect, make }) satisfies InputMutator;

/** Sets `fields` of the base config to hostile values; a pinned field set to anything but its own
 *  number makes the case one that must be refused. */
async function setFields(c: InputCtx, fields: string[]): Promise<InputCase> {
  const json: Record<string, unknown> = { ...c.base.config };
  let pinnedChanged = false;
  for (const f of fields) {
    const v = valueFor(c.rng, json[f]);
    if (PINNED.includes(f) && numberOf(v) !== json[f]) pinnedChanged = true;
    json[f] = v;
  }
  return withConfig(c, serialize(json), pinnedChanged ? 'invalid' : undefined);
}

const ROPE_SCALINGS: unknown[] = [
  { rope_type: 'linear', factor: 2 },
  { rope_type: 'linear', factor: new Raw('1e-300') },
  { rope_type: 'linear', factor: 1e300 },
  { type: 'dynamic', factor: 2 },
  { rope_type: 'dynamic', factor: 0 },
  { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 16 },
  { rope_type: 'yarn', factor: 4, beta_fast: -1, beta_slow: 1e300 },
  { rope_type: 'yarn', factor: 1e-300, attention_factor: 1e300 },
  { rope_type: 'llama3', factor: 8, low_freq_factor: 4, high_freq_factor: 1, original_max_position_embeddings: 16 },
  { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 1, original_max_position_embeddings: 0 },
  { rope_type: 'llama3', factor: 'NaN', low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
  { rope_type: 'longrope', factor: 2 },
  { rope_type: 'linear' },
  { factor: 2 },
  { rope_type: 'linear', factor: 2, extra: 1 },
  'linear',
  [],
  7,
];

export const CONFIG_MUTATORS: InputMutator[] = [
  mutator('config-number', 'either', (c) => setFields(c, [c.rng.pick(NUMBERS)])),
  mutator('config-pinned', 'either', (c) => setFields(c, [c.rng.pick(PINNED)])),
  mutator('config-several', 'either', (c) =>
    setFields(
      c,
      Array.from({ length: c.rng.int(2, 4) }, () => c.rng.pick(NUMBERS)).filter((f, i, a) => a.indexOf(f) === i),
    ),
  ),
  mutator('config-rope-scaling', 'either', (c) =>
    withConfig(c, serialize({ ...c.base.config, rope_scaling: c.rng.pick(ROPE_SCALINGS) })),
  ),
  mutator('config-model-type', 'either', (c) =>
    withConfig(
      c,
      serialize({
        ...c.base.config,
        model_type: c.rng.pick(['llama', 'mistral', 'qwen2', 'gemma', 'gemma2', 'phi', 'phi3', 'gpt2', '', 7, null]),
      }),
    ),
  ),
  mutator('config-flags', 'either', (c) => {
    const f = c.rng.pick(['tie_word_embeddings', 'attention_bias', 'mlp_bias', 'use_sliding_window', 'qk_layernorm']);
    return withConfig(c, serialize({ ...c.base.config, [f]: c.rng.pick([true, false, null, 'true', 0, 1]) }));
  }),
  mutator('config-not-json', 'invalid', async (c) => {
    const text = JSON.stringify(c.base.config);
    const depth = c.rng.pick([1000, 100_000]);
    const k = c.rng.int(0, 2);
    if (k === 2) {
      await fsp.rm(path.join(c.model, 'config.json'));
      const file = await validTokenFile(c);
      return { calibration: { file }, evalTokens: file };
    }
    return withConfig(
      c,
      k === 0
        ? c.rng.pick(['', '[]', 'null', text.slice(0, c.rng.int(0, text.length - 1)), '{"model_type": "llama",}'])
        : `{"model_type": "llama", "x": ${'['.repeat(depth)}${']'.repeat(depth)}}`,
    );
  }),
];
