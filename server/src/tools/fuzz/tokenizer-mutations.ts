// Mutations of tokenizer.json (and the .txt it tokenizes for `--calib` and eval): vocabularies
// with ids that are negative, fractional, duplicated or past the model's vocabulary; merges that
// name unknown tokens or are not strings; unknown model types; special tokens with foreign ids;
// pre-tokenizer and normalizer regexes that are invalid or backtrack (for ever, for some: the
// run must end by the tokenizer's time bound or the case's cancel, never hang); files that are
// not JSON, nested deep, missing or not files; tokenizer_config.json gone wrong; and texts that
// are empty, not UTF-8, outside the vocabulary or one long paragraph.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { InputCtx, InputCase, InputMutator, writeInput } from './inputs';
import { sampleText, tokenizerJson } from './tiny-model';

type Json = Record<string, unknown>;

/** tokenizer.json, and the text to tokenize: sample text unless given. A refusal of a case whose
 *  text is plain (`textValid`) must name tokenizer.json, never the text it tokenized. */
async function withTokenizer(
  c: InputCtx,
  json: Json | string,
  text?: string | Uint8Array,
  textValid = text === undefined,
): Promise<InputCase> {
  await fsp.writeFile(path.join(c.model, 'tokenizer.json'), typeof json === 'string' ? json : JSON.stringify(json));
  const file = await writeInput(c.dir, 'calib.txt', text ?? sampleText(c.rng, c.rng.int(1, 5)));
  return { calibration: { file }, evalTokens: file, ...(textValid ? { innocent: ['calib.txt'] } : {}) };
}

const mutator = (
  name: string,
  expect: InputMutator['expect'],
  make: (c: InputCtx) => Promise<InputCase>,
  weight = 1,
): InputMutator => ({ name, family: 'tokenizer', expect, make, weight });

/** tokenizer.json changed by `f` (its model, vocab …), with sample text. */
const edit = (name: string, expect: InputMutator['expect'], f: (j: Json, c: InputCtx) => void) =>
  mutator(name, expect, (c) => {
    const j = tokenizerJson();
    f(j, c);
    return withTokenizer(c, j);
  });

const model = (j: Json) => j.model as Json;
const vocab = (j: Json) => model(j).vocab as Record<string, unknown>;

/** Regexes that backtrack: exponentially on the text `bad` builds (for n ≥ ~25, for ever here). */
const BACKTRACKING = ['(a|a)+$', '(a+)+$', '(a|aa)+$', '(.*a){12}$', '^(a?){25}a{25}$'];

export const TOKENIZER_MUTATORS: InputMutator[] = [
  edit('tokenizer-valid', 'valid', () => undefined),
  mutator('tokenizer-text', 'either', (c) => {
    const text = c.rng.pick<() => string | Uint8Array>([
      () => '',
      () => '\n\n \n\t\n',
      () => 'zzz 😀 ünïcödé 123 <s></s> ' + sampleText(c.rng, 1),
      () => sampleText(c.rng, 3).replace(/\n/g, '\r\n'),
      () => 'a\n\nb\n\nc',
      // One paragraph of 2–5k tokens: cut into pieces of the registry's sequence bound.
      () => Array.from({ length: c.rng.int(700, 1600) }, () => c.rng.pick(['the', 'a', 'cat', 'sat.'])).join(' '),
      () => Array.from({ length: c.rng.int(50, 400) }, () => sampleText(c.rng, 1)).join('\n\n'),
      () => new Uint8Array([0x74, 0x68, 0x65, 0xff, 0xfe, 0x20, 0x61]),
      () => '\u0000\u0001 the \u2028 cat',
    ])();
    return withTokenizer(c, tokenizerJson(), text);
  }),
  mutator(
    'tokenizer-backtracking-regex',
    'either',
    (c) => {
      const j = tokenizerJson();
      const re = c.rng.pick(BACKTRACKING);
      const split = { type: 'Split', pattern: { Regex: re }, behavior: 'Isolated', invert: false };
      if (c.rng.chance(0.7)) j.pre_tokenizer = split;
      else
        j.normalizer = { type: 'Sequence', normalizers: [{ type: 'Replace', pattern: { Regex: re }, content: 'b' }] };
      const n = c.rng.pick([8, 12, 16, 18, 20, 40]);
      return withTokenizer(c, j, `the cat sat.\n\n${'a'.repeat(n)}b\n`, true);
    },
    0.5,
  ),
  edit('tokenizer-invalid-regex', 'either', (j, c) => {
    const re = c.rng.pick(['(', '[a-', '(?<', '\\', 'a{2,1}', '(?P<x>a)', '\\p{Foo}', '*']);
    j.pre_tokenizer = { type: 'Split', pattern: { Regex: re }, behavior: 'Isolated', invert: false };
  }),
  edit('tokenizer-pre-tokenizer-type', 'either', (j, c) => {
    j.pre_tokenizer = c.rng.pick([
      { type: 'Nope' },
      { type: 'Split' },
      { type: 'Sequence', pretokenizers: null },
      { type: 'Metaspace', replacement: '', prepend_scheme: 'always' },
      { type: 'ByteLevel', add_prefix_space: 'x' },
      { type: 'Sequence', pretokenizers: Array.from({ length: 200 }, () => ({ type: 'Whitespace' })) },
      [],
      42,
    ]);
  }),
  // Ids the model's embedding has no row for, or not ids at all.
  edit('tokenizer-vocab', 'either', (j, c) => {
    const v = vocab(j);
    const key = c.rng.pick(Object.keys(v));
    const k = c.rng.int(0, 4);
    if (k === 0) v[key] = c.rng.pick([-1, 1.5, '5', null, 1e21, NaN]);
    else if (k === 1) v[key] = c.rng.pick([48, 100, 2 ** 31 - 1, 2 ** 31, 2 ** 53]);
    else if (k === 2) v[key] = v[c.rng.pick(Object.keys(v))];
    else if (k === 3) model(j).vocab = c.rng.pick([{}, [], null, 'x', [['a', 4]]]);
    else for (let i = 0; i < c.rng.pick([1000, 50_000]); i++) v[`tok${i}`] = 100 + i;
  }),
  edit('tokenizer-merges', 'either', (j, c) => {
    const m = model(j);
    m.merges = c.rng.pick([
      ['x y'],
      ['▁ t', '▁t he', 'zz zz'],
      [1, 2],
      [null],
      ['a'],
      ['a b c'],
      [['▁', 't']],
      [['▁']],
      {},
      'a b',
      Array.from(
        { length: 20_000 },
        (_, i) => `${String.fromCharCode(97 + (i % 26))} ${String.fromCharCode(97 + ((i * 7) % 26))}`,
      ),
    ]);
  }),
  edit('tokenizer-model-type', 'either', (j, c) => {
    const k = c.rng.int(0, 2);
    if (k === 0) model(j).type = c.rng.pick(['WordPiece', 'Unigram', 'WordLevel', 'Foo', '', 7]);
    else if (k === 1) j.model = c.rng.pick([null, {}, [], 'BPE']);
    else delete j.model;
  }),
  // Special tokens whose ids are not in the vocabulary: the encoded text holds them.
  edit('tokenizer-special-ids', 'either', (j, c) => {
    const id = c.rng.pick([48, 1000, 2 ** 31, -1, 1.5, '1', null]);
    if (c.rng.chance(0.5)) {
      const pp = j.post_processor as Json;
      (pp.special_tokens as Json)['<s>'] = { id: '<s>', ids: [id], tokens: ['<s>'] };
    } else (j.added_tokens as Json[]).push({ id, content: 'the', special: c.rng.chance(0.5), normalized: false });
  }),
  mutator('tokenizer-not-json', 'invalid', (c) => {
    const text = JSON.stringify(tokenizerJson());
    const depth = c.rng.pick([1000, 100_000]);
    return withTokenizer(
      c,
      c.rng.pick([
        '',
        text.slice(0, c.rng.int(0, text.length - 1)),
        '[]',
        'null',
        '"x"',
        '{"model": ' + '['.repeat(depth) + ']'.repeat(depth) + '}',
        '\u00ff{}',
      ]),
    );
  }),
  mutator('tokenizer-missing', 'invalid', async (c) => {
    const p = path.join(c.model, 'tokenizer.json');
    await fsp.rm(p);
    const k = c.rng.int(0, 2);
    if (k === 1) await fsp.mkdir(p);
    if (k === 2) await fsp.symlink(path.join(c.dir, 'elsewhere.json'), p);
    const file = await writeInput(c.dir, 'calib.txt', sampleText(c.rng, 2));
    return { calibration: { file }, evalTokens: file };
  }),
  mutator('tokenizer-config', 'either', async (c) => {
    await fsp.writeFile(
      path.join(c.model, 'tokenizer_config.json'),
      c.rng.pick([
        '',
        '[]',
        '{',
        JSON.stringify({ add_bos_token: 'yes' }),
        JSON.stringify({ add_bos_token: false, add_eos_token: true }),
        JSON.stringify({ model_max_length: -1 }),
        JSON.stringify({ bos_token: { content: '<zz>' }, add_bos_token: true }),
        JSON.stringify({ chat_template: '{% for %}' }),
      ]),
    );
    return withTokenizer(c, tokenizerJson());
  }),
];
