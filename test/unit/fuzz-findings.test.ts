// What the model-input fuzz families (npm run fuzz --family calib,imatrix,tokenizer,config) found,
// each rebuilt by hand on a tiny model: before the fixes, a fatal out-of-memory, a RangeError, a
// journal left by a refused run, a negative token count in the report, NaN statistics blamed on a
// valid token file, a tokenizer's negative id blamed on the text it encoded, a tokenizer id of
// 2^31 - 1 that held the calling thread for a minute, and a tokenizer that lost the text.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeGgufImatrix, writeLegacyImatrix } from '../calib-files';
import { InputError } from '../../server/src/base/errors';
import { CheckpointError } from '../../server/src/checkpoint';
import { quantizeCheckpoint } from '../../server/src/engine/run';
import { registerCalibrationCollector } from '../../server/src/model/calibrate';
import { parseModelConfig, readModelConfig } from '../../server/src/model/config';
import { readImatrix } from '../../server/src/model/imatrix';
import { readCalibrationTokens } from '../../server/src/model/calibTokens';
import { MAX_RIDGE } from '../../server/src/registry';
import { baseConfig, tokenizerJson, writeBase } from '../../server/src/tools/fuzz/tiny-model';
import { tempDir } from '../helpers';

const SETTINGS = { bits: 2, rank: 1, iters: 1, quantizer: 'nf' as const, blockSize: 8 };
const RUN = { settings: SETTINGS, workers: 'in-thread' as const, backend: 'wasm' as const };

/** The parts of the fuzzer's tokenizer.json the tests change. */
type TokenizerJson = { model: { vocab: Record<string, unknown> }; added_tokens: Record<string, unknown>[] };

/** A tiny Llama (2 layers, hidden 16, vocabulary 48) in a fresh folder. */
async function tinyLlama(): Promise<{ dir: string; model: string }> {
  const dir = tempDir();
  const model = path.join(dir, 'model');
  await writeBase('llama', model);
  return { dir, model };
}

test('config.json counts past 2^53, or 2^31 layers, are refused naming the field (a fatal OOM before)', () => {
  const file = '/m/config.json';
  const cases: [string, number, RegExp][] = [
    // Array.from({ length: 2^31 }) for the per-layer windows ended the process with "heap out of memory".
    ['num_hidden_layers', 2 ** 31, /field 'num_hidden_layers' is 2147483648; at most 16777216 layers are read/],
    // 1e300 passed Number.isInteger: a RangeError (Invalid array length), no file named.
    ['num_hidden_layers', 1e300, /field 'num_hidden_layers' must be a positive integer below 2\^53 \(found 1e\+300\)/],
    ['hidden_size', 2 ** 60, /field 'hidden_size' must be a positive integer below 2\^53/],
    ['vocab_size', 2 ** 53, /field 'vocab_size' must be a positive integer below 2\^53/],
  ];
  for (const [field, value, why] of cases) {
    const t0 = performance.now();
    assert.throws(
      () => parseModelConfig(file, { ...baseConfig('llama'), [field]: value }),
      (e: unknown) => e instanceof CheckpointError && e.message.startsWith(file) && why.test(e.message),
      `${field} ${value}`,
    );
    assert.ok(performance.now() - t0 < 1000, `${field} ${value} took ${performance.now() - t0} ms`);
  }
  // The bound leaves every real count alone: 2^24 layers still parse (and are then compared with the tensors).
  assert.equal(parseModelConfig(file, { ...baseConfig('llama'), num_hidden_layers: 2 ** 24 }).numLayers, 2 ** 24);
});

test('an imatrix that fits float32 but not with the ridge is refused by the reader: no journal left', async () => {
  registerCalibrationCollector();
  const { dir, model } = await tinyLlama();
  const c = await readModelConfig(model);
  const ok = Array.from({ length: 16 }, (_, i) => 0.5 + i / 16);
  // 3.39e38 fits float32 (max 3.4028e38); plus the default ridge, 0.01 × the entry's mean (3.4e36), it
  // does not. The reader let it through, and the run refused it at layer 1's matrix, after layer 0's.
  const huge = ok.map(() => 3.39e38);
  const gguf = path.join(dir, 'huge.gguf');
  writeGgufImatrix(gguf, [
    { name: 'blk.0.attn_q.weight', mean: ok, count: 64 },
    { name: 'blk.1.ffn_up.weight', mean: huge, count: 1 },
  ]);
  await assert.rejects(readImatrix(gguf, c), (e: unknown) => {
    assert.ok(e instanceof InputError && e.file === gguf, String(e));
    assert.match(e.message, /blk\.1\.ffn_up\.weight \(model\.layers\.1\.mlp\.up_proj\.weight\) column 0: mean x² /);
    assert.match(
      e.message,
      new RegExp(`plus the largest ridge, ${MAX_RIDGE} × the entry's mean = [0-9.e+]+, overflows float32`),
    );
    return true;
  });
  // The run: refused before the output folder is made (it was refused per matrix, the matrices
  // before it already in OUT/.loftq-journal/).
  const out = path.join(dir, 'out');
  await assert.rejects(
    quantizeCheckpoint(path.join(model, 'model.safetensors'), { ...RUN, out, calibration: { imatrix: gguf } }),
    (e: unknown) => e instanceof InputError && e.file === gguf,
  );
  assert.equal(fs.existsSync(out), false);
  // Just inside the bound: read as it is.
  const fits = ok.map((v, i) => (i === 3 ? 1e30 : v));
  writeGgufImatrix(gguf, [{ name: 'blk.1.ffn_up.weight', mean: fits, count: 1 }]);
  const stats = await readImatrix(gguf, c);
  assert.equal(stats.get('model.layers.1.mlp.up_proj.weight')?.dim, 16);
});

test('a legacy imatrix with a negative ncall is refused (it became a negative token count in the report)', async () => {
  const { dir, model } = await tinyLlama();
  const c = await readModelConfig(model);
  const dat = path.join(dir, 'neg.dat');
  writeLegacyImatrix(dat, [{ name: 'blk.0.attn_q.weight', mean: Array(16).fill(1), count: -1 }]);
  await assert.rejects(
    readImatrix(dat, c),
    (e: unknown) =>
      e instanceof InputError &&
      e.file === dat &&
      /entry blk\.0\.attn_q\.weight: ncall \(chunks\) is -1/.test(e.message),
  );
  // ncall 0 (values not scaled) stays readable, as llama.cpp reads it.
  writeLegacyImatrix(dat, [{ name: 'blk.0.attn_q.weight', mean: Array(16).fill(1), count: 0 }]);
  assert.equal((await readImatrix(dat, c)).get('model.layers.0.self_attn.q_proj.weight')?.count, 0);
});

test('NaN activations from config.json are refused naming the model, not the valid token file', async () => {
  registerCalibrationCollector();
  const { dir, model } = await tinyLlama();
  // Interpolated frequencies 1/(1e-300 · θ^…) overflow float32, and so does attention_factor 1e300:
  // every rotated q/k is NaN. Before: "tokens.json: statistics unusable … (mean NaN)".
  const cfg = { ...baseConfig('llama'), rope_scaling: { rope_type: 'yarn', factor: 1e-300, attention_factor: 1e300 } };
  fs.writeFileSync(path.join(model, 'config.json'), JSON.stringify(cfg));
  const tokens = path.join(dir, 'tokens.json');
  fs.writeFileSync(tokens, JSON.stringify([[1, 5, 9, 30, 2, 7, 7, 12]]));
  const out = path.join(dir, 'out');
  const ck = path.join(model, 'model.safetensors');
  await assert.rejects(quantizeCheckpoint(ck, { ...RUN, out, calibration: { file: tokens } }), (e: unknown) => {
    assert.ok(e instanceof InputError, String(e));
    assert.equal(e.file, ck);
    assert.match(e.message, /the mean x² of model\.layers\.0\.self_attn\.o_proj\.weight's input is NaN in column \d+/);
    assert.match(
      e.message,
      /a config\.json value \(rope_theta, rope_scaling, rms_norm_eps, …\) or a weight is implausible/,
    );
    assert.doesNotMatch(e.message, /tokens\.json/);
    return true;
  });
  assert.equal(fs.existsSync(out), false);
});

test('a tokenizer.json id below 0 or fractional is refused naming the token (the text file was blamed)', async () => {
  const { dir, model } = await tinyLlama();
  const c = await readModelConfig(model);
  const txt = path.join(dir, 'story.txt');
  fs.writeFileSync(txt, 'the cat sat.\n\nthe end.\n');
  const file = path.join(model, 'tokenizer.json');
  // 't' as -1 encoded "cat" to [..., -1]: "story.txt: token id -1 is outside the vocabulary (another model's
  // tokens?)". As 1.5 it became id 1 (<s>) through the encoder's Int32Array, without a word.
  for (const id of [-1, 1.5, '7']) {
    const j = tokenizerJson() as TokenizerJson;
    j.model.vocab.t = id;
    fs.writeFileSync(file, JSON.stringify(j));
    await assert.rejects(readCalibrationTokens(txt, model, c), (e: unknown) => {
      assert.ok(e instanceof CheckpointError, `${id}: ${e}`);
      assert.equal(e.file, file);
      assert.match(e.message, new RegExp(`gives token 't' the id ${id === '7' ? '"7"' : id}; ids are integers ≥ 0`));
      return true;
    });
  }
  // The tokenizer as written: the same text is read.
  fs.writeFileSync(file, JSON.stringify(tokenizerJson()));
  assert.equal((await readCalibrationTokens(txt, model, c)).sequences.length, 2);
});

test('a tokenizer.json id of 2^31 - 1: refused at once as too large a vocabulary (a minute of sync work)', async () => {
  const { dir, model } = await tinyLlama();
  const c = await readModelConfig(model);
  const txt = path.join(dir, 'story.txt');
  fs.writeFileSync(txt, 'the cat sat.\n');
  const file = path.join(model, 'tokenizer.json');
  for (const [where, edit] of [
    ['vocab', (j: TokenizerJson) => (j.model.vocab.t = 2 ** 31 - 1)],
    ['added_tokens', (j: TokenizerJson) => j.added_tokens.push({ id: 2 ** 31 - 1, content: 'cat', special: false })],
  ] as const) {
    const j = tokenizerJson() as TokenizerJson;
    edit(j);
    fs.writeFileSync(file, JSON.stringify(j));
    const t0 = performance.now();
    await assert.rejects(
      readCalibrationTokens(txt, model, c),
      (e: unknown) =>
        e instanceof InputError &&
        e.file === file &&
        /has 2147483648 tokens, but config\.json says vocab_size 48/.test(e.message),
      where,
    );
    assert.ok(performance.now() - t0 < 3000, `${where}: ${performance.now() - t0} ms`);
  }
});

test('a tokenizer that drops the text is refused naming tokenizer.json (<s></s> alone was calibrated on)', async () => {
  const { dir, model } = await tinyLlama();
  const c = await readModelConfig(model);
  const txt = path.join(dir, 'story.txt');
  fs.writeFileSync(txt, 'the cat sat.\n\nthe dog ran.\n');
  const file = path.join(model, 'tokenizer.json');
  type Template = { single: unknown[]; special_tokens: Record<string, unknown> };
  // A Split pre-tokenizer without a pattern leaves nothing of the text: <s> alone was refused as
  // "story.txt: sequence 0 has 1 token"; with </s> appended too, two special tokens were calibrated on.
  for (const eos of [false, true]) {
    const j = tokenizerJson() as TokenizerJson & { pre_tokenizer: unknown; post_processor: Template };
    j.pre_tokenizer = { type: 'Split' };
    if (eos) {
      j.post_processor.single.push({ SpecialToken: { id: '</s>', type_id: 0 } });
      j.post_processor.special_tokens['</s>'] = { id: '</s>', ids: [2], tokens: ['</s>'] };
    }
    fs.writeFileSync(file, JSON.stringify(j));
    await assert.rejects(
      readCalibrationTokens(txt, model, c),
      (e: unknown) =>
        e instanceof InputError &&
        e.file === file &&
        /encodes paragraph 1 of .*story\.txt \(12 characters\) to special tokens only: its text is lost/.test(
          e.message,
        ),
      `</s> appended: ${eos}`,
    );
  }
  // The same template on the tokenizer as written keeps the text.
  const j = tokenizerJson() as TokenizerJson & { post_processor: Template };
  j.post_processor.single.push({ SpecialToken: { id: '</s>', type_id: 0 } });
  j.post_processor.special_tokens['</s>'] = { id: '</s>', ids: [2], tokens: ['</s>'] };
  fs.writeFileSync(file, JSON.stringify(j));
  const read = await readCalibrationTokens(txt, model, c);
  assert.deepEqual(
    read.sequences.map((s) => [s[0], s[s.length - 1], s.length > 3]),
    [
      [1, 2, true],
      [1, 2, true],
    ],
  );
});
