// The calibration sources of `loftq quantize`: llama.cpp importance matrices (GGUF and legacy
// .dat, written by an independent writer), .txt through the checkpoint's tokenizer.json, JSON
// ids; and every bad input refused with exit 2, one line naming the file, nothing written.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readImatrix } from '../../server/src/model/imatrix';
import { readModelConfig } from '../../server/src/model/config';
import { readCalibrationTokens } from '../../server/src/model/calibTokens';
import type { Report } from '../../server/src/protocol/lsp_ext';
import { NativeBackend, nativeAddon } from '../../server/src/linalg/nativeBackend';
import { requireNative } from './nativeRequired';
import { expectedIds, ImatrixEntry, writeGgufImatrix, writeLegacyImatrix, writeTestTokenizer } from '../calib-files';
import { repoRoot, tempDir } from '../helpers';

const CLI = path.join(repoRoot, 'dist', 'cli.js');
const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
// wasm by name (the CLI's default is auto): the expected products and notes are wasm's.
const FAST = ['--bits', '4', '--rank', '4', '--iters', '2', '--quiet', '--workers', '0', '--backend', 'wasm'];

/** A copy of stories260K (its own folder, so side files can be added). */
function storiesCopy(): string {
  const dir = path.join(tempDir(), 'stories');
  fs.mkdirSync(dir);
  for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(STORIES, f), path.join(dir, f));
  return dir;
}

const ramp = (n: number, k: number) => Array.from({ length: n }, (_, i) => 0.25 + ((i * 7 + k) % 13) / 4);
const ENTRIES: ImatrixEntry[] = [
  { name: 'blk.0.attn_q.weight', mean: ramp(64, 1), count: 2048 },
  { name: 'blk.0.attn_k.weight', mean: ramp(64, 1), count: 2048 },
  { name: 'blk.2.attn_output.weight', mean: ramp(64, 2), count: 2048 },
  { name: 'blk.4.ffn_down.weight', mean: ramp(172, 3), count: 2048 },
  { name: 'blk.3.ffn_up.weight', mean: ramp(64, 4), count: 2048 },
  { name: 'output.weight', mean: ramp(64, 5), count: 2048 },
];
const HF: Record<string, string> = {
  'blk.0.attn_q.weight': 'model.layers.0.self_attn.q_proj.weight',
  'blk.0.attn_k.weight': 'model.layers.0.self_attn.k_proj.weight',
  'blk.2.attn_output.weight': 'model.layers.2.self_attn.o_proj.weight',
  'blk.4.ffn_down.weight': 'model.layers.4.mlp.down_proj.weight',
  'blk.3.ffn_up.weight': 'model.layers.3.mlp.up_proj.weight',
};

test('imatrix (GGUF and legacy .dat): diagonal statistics = mean x² per column under Hugging Face names', async () => {
  const c = await readModelConfig(STORIES);
  const dir = tempDir();
  const files = { gguf: path.join(dir, 'imatrix.gguf'), dat: path.join(dir, 'imatrix.dat') };
  writeGgufImatrix(files.gguf, ENTRIES);
  // Legacy ncall counts chunks, not tokens: the stored values are mean·ncall.
  writeLegacyImatrix(
    files.dat,
    ENTRIES.map((e) => ({ ...e, count: 16 })),
  );
  for (const file of Object.values(files)) {
    const stats = await readImatrix(file, c);
    assert.deepEqual([...stats.keys()].sort(), Object.values(HF).sort(), file);
    for (const e of ENTRIES.filter((x) => HF[x.name])) {
      const s = stats.get(HF[e.name])!;
      assert.equal(s.kind, 'diag');
      assert.equal(s.dim, e.mean.length);
      if (s.kind !== 'diag') continue;
      for (let i = 0; i < s.dim; i++)
        assert.ok(
          Math.abs(s.d[i] - e.mean[i]) <= 1e-6 * e.mean[i],
          `${file} ${e.name}[${i}]: ${s.d[i]} vs ${e.mean[i]}`,
        );
    }
  }
});

test('quantize --imatrix: matrices it covers get output errors, others plain LoftQ; report names the source', () => {
  const file = path.join(tempDir(), 'imatrix.gguf');
  writeGgufImatrix(file, ENTRIES);
  const out = path.join(tempDir(), 'out');
  const r = run('quantize', STORIES, '--out', out, ...FAST, '--imatrix', file, '--json');
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout) as Report;
  assert.deepEqual(report.calibration, {
    source: 'imatrix',
    file,
    sequences: 0,
    tokens: 2048,
    fullStatMaxDim: 0,
    ridge: 0.01,
  });
  for (const m of report.matrices) {
    const covered = Object.values(HF).includes(m.name);
    assert.equal(m.outputRelError !== undefined, covered, m.name);
    if (covered) assert.ok(m.outputRelError! < m.qloraOutputRelError!, m.name);
  }
});

test("--calib story.txt: paragraphs tokenized with the folder's tokenizer.json; report counts them", async () => {
  const dir = storiesCopy();
  writeTestTokenizer(dir);
  const paragraphs = ['the cat sat on the mat.', 'tom had a red ball, and the ball was big!', 'the end.'];
  const txt = path.join(tempDir(), 'story.txt');
  fs.writeFileSync(txt, `${paragraphs[0]}\n\n${paragraphs[1]}\r\n  \r\n\n${paragraphs[2]}\n`);
  const read = await readCalibrationTokens(txt, dir, await readModelConfig(dir));
  assert.equal(read.source, 'text');
  assert.deepEqual(read.sequences, paragraphs.map(expectedIds));
  const out = path.join(tempDir(), 'out');
  const r = run('quantize', dir, '--out', out, ...FAST, '--calib', txt, '--json');
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout) as Report;
  const tokens = paragraphs.map(expectedIds).flat().length;
  assert.deepEqual(report.calibration, {
    source: 'text',
    file: txt,
    sequences: 3,
    tokens,
    fullStatMaxDim: 8192,
    ridge: 0.01,
    products: 'float32',
  });
  assert.ok(report.matrices.every((m) => m.outputRelError !== undefined && m.bestIter !== undefined));
});

test('--calib ids.json with --calib-ridge: every matrix calibrated, ridge recorded', () => {
  const ids = path.join(tempDir(), 'ids.json');
  fs.writeFileSync(
    ids,
    JSON.stringify([
      [1, 403, 407, 261, 378],
      [1, 43, 7, 99, 100, 12],
    ]),
  );
  const r = run(
    'quantize',
    STORIES,
    '--out',
    path.join(tempDir(), 'out'),
    ...FAST,
    '--calib',
    ids,
    '--calib-ridge',
    '0.05',
    '--json',
  );
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout) as Report;
  assert.deepEqual(report.calibration, {
    source: 'tokens',
    file: ids,
    sequences: 2,
    tokens: 11,
    fullStatMaxDim: 8192,
    ridge: 0.05,
    products: 'float32',
  });
  assert.equal(report.matrices.filter((m) => m.outputRelError !== undefined).length, 35);
  // Without --json the summary gives the mean output errors (of the same report) and the source.
  const out = path.join(tempDir(), 'out-text');
  const t = run('quantize', STORIES, '--out', out, ...FAST, '--calib', ids, '--calib-ridge', '0.05');
  assert.equal(t.status, 0, t.stderr);
  const mean = (f: (m: Report['matrices'][number]) => number) =>
    report.matrices.reduce((a, m) => a + f(m), 0) / report.matrices.length;
  const line = t.stdout.split('\n').find((l) => l.startsWith('mean output error'));
  assert.equal(
    line,
    `mean output error ‖(W−Q−AB)S‖/‖WS‖: LoftQ ${mean((m) => m.outputRelError!).toFixed(4)}  vs QLoRA ` +
      `${mean((m) => m.qloraOutputRelError!).toFixed(4)}; ` +
      `calibration: 2 sequences, 11 tokens (tokens ${ids}), ridge 0.05`,
  );
});

function refused(args: string[], file: string | undefined, problem: RegExp): void {
  const out = path.join(tempDir(), 'out');
  const r = run('quantize', ...args, '--out', out, ...FAST);
  assert.equal(r.status, 2, `exit code for ${problem} (stderr: ${r.stderr})`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line, got: ${r.stderr}`);
  if (file) assert.ok(lines[0].includes(file), `names ${file}: ${lines[0]}`);
  assert.match(lines[0], problem);
  assert.ok(
    !fs.existsSync(out) || fs.readdirSync(out).length === 0,
    `nothing written for ${problem}: ${fs.existsSync(out) && fs.readdirSync(out)}`,
  );
}

test('--backend native: the calibration pass in bf16 products where it can, float32 when asked; reported', (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  // bf16 exactly where the native backend's default kernels have AVX512-BF16 (collect.ts).
  const bf16 = new NativeBackend(module).bf16;
  const ids = path.join(tempDir(), 'ids.json');
  fs.writeFileSync(ids, JSON.stringify([[1, 403, 407, 261, 378, 426, 275, 259, 1, 8, 300, 301]]));
  const quantize = (...extra: string[]) => {
    const out = path.join(tempDir(), 'out');
    const fast = FAST.filter((a) => a !== '--quiet');
    const r = run('quantize', STORIES, '--out', out, ...fast, '--backend', 'native', '--calib', ids, ...extra);
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(fs.readFileSync(path.join(out, 'loftq-report.json'), 'utf8')) as Report;
    return { report, said: /pass in bf16 products/.test(r.stdout + r.stderr) };
  };
  const auto = quantize();
  assert.equal(auto.report.calibration?.products, bf16 ? 'bf16' : 'float32');
  assert.equal(auto.said, bf16);
  const f32 = quantize('--calib-products', 'float32');
  assert.equal(f32.report.calibration?.products, 'float32');
  assert.equal(f32.said, false);
  // Other statistics, so other output errors — or the same ones where bf16 never ran.
  const errors = (r: Report) => r.matrices.map((m) => m.outputRelError);
  if (bf16) assert.notDeepEqual(errors(auto.report), errors(f32.report));
  else assert.deepEqual(errors(auto.report), errors(f32.report));
  // On wasm, where the native module is built, the CLI points at it (not under --quiet).
  const fast = FAST.filter((a) => a !== '--quiet');
  const onWasm = run('quantize', STORIES, '--out', path.join(tempDir(), 'w'), ...fast, '--calib', ids);
  assert.equal(onWasm.status, 0, onWasm.stderr);
  assert.match(onWasm.stderr, /note: calibrated runs are arithmetic-heavy; --backend native/);
  const quiet = run('quantize', STORIES, '--out', path.join(tempDir(), 'q'), ...FAST, '--calib', ids);
  assert.doesNotMatch(quiet.stderr, /note:/);
});

test('bad calibration input: exit 2, one line naming the file and the problem, nothing written', () => {
  const dir = tempDir();
  const write = (name: string, data: string | Buffer) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, data);
    return p;
  };
  const json = (name: string, v: unknown) => write(name, JSON.stringify(v));
  refused(
    [
      STORIES,
      '--calib',
      json('oov.json', [
        [1, 2, 3],
        [1, 512, 4],
      ]),
    ],
    'oov.json',
    /sequence 1, position 1: token id 512 is outside the vocabulary \(0\.\.511/,
  );
  refused([STORIES, '--calib', json('neg.json', [[1, -3]])], 'neg.json', /token id -3 is outside the vocabulary/);
  refused([STORIES, '--calib', write('empty.json', '')], 'empty.json', /is empty/);
  refused([STORIES, '--calib', json('none.json', [])], 'none.json', /holds no token sequences/);
  refused(
    [STORIES, '--calib', json('short.json', [[1, 5, 6], [1]])],
    'short.json',
    /sequence 1 has 1 token; each needs at least 2/,
  );
  refused(
    [STORIES, '--calib', json('float.json', [[1, 2.5]])],
    'float.json',
    /sequence 0, position 1: 2\.5 is not an integer token id/,
  );
  refused(
    [STORIES, '--calib', write('notjson.json', 'hello there')],
    'notjson.json',
    /neither a JSON array of token-id sequences nor a \.txt file/,
  );
  refused([STORIES, '--calib', path.join(dir, 'missing.json')], 'missing.json', /does not exist/);
  refused(
    [STORIES, '--calib', write('story.txt', 'once upon a time')],
    'story.txt',
    /is text, but .* has no tokenizer\.json/,
  );
  refused([STORIES, '--calib', write('blank.txt', '\n\n  \n')], 'blank.txt', /is empty/);
  const big = storiesCopy();
  writeTestTokenizer(big, 600);
  refused(
    [big, '--calib', write('story2.txt', 'the cat')],
    'tokenizer.json',
    /has \d+ tokens, but config\.json says vocab_size 512 \(another model's tokenizer\?\)/,
  );
  const ggufWide = path.join(dir, 'wide.gguf');
  writeGgufImatrix(ggufWide, [{ name: 'blk.0.attn_q.weight', mean: ramp(128, 0), count: 10 }]);
  refused(
    [STORIES, '--imatrix', ggufWide],
    'wide.gguf',
    /blk\.0\.attn_q\.weight.* is 128 wide, but model\.layers\.0\.self_attn\.q_proj\.weight has 64 inputs \(another/,
  );
  const datDeep = path.join(dir, 'deep.dat');
  writeLegacyImatrix(datDeep, [{ name: 'blk.31.attn_q.weight', mean: ramp(64, 0), count: 1 }]);
  refused(
    [STORIES, '--imatrix', datDeep],
    'deep.dat',
    /blk\.31\.attn_q\.weight.*describes 5 layers \(another model\?\)/,
  );
  const ggufOther = path.join(dir, 'other.gguf');
  writeGgufImatrix(ggufOther, [{ name: 'enc.0.attn.weight', mean: ramp(64, 0), count: 10 }]);
  refused([STORIES, '--imatrix', ggufOther], 'other.gguf', /names none of the model's linear layers/);
  const notImatrix = path.join(dir, 'model.gguf');
  writeGgufImatrix(notImatrix, ENTRIES, 'model');
  refused([STORIES, '--imatrix', notImatrix], 'model.gguf', /is a GGUF file of type model, not an imatrix/);
  const cut = path.join(dir, 'cut.dat');
  writeLegacyImatrix(cut, ENTRIES);
  fs.truncateSync(cut, 100);
  refused([STORIES, '--imatrix', cut], 'cut.dat', /ends early/);
  refused([STORIES, '--imatrix', write('empty.gguf', '')], 'empty.gguf', /is empty/);
  refused([STORIES, '--calib-generate', '16'], undefined, /'--calib-generate' must be N,LEN/);
  refused([STORIES, '--calib-generate', '4,1'], undefined, /LEN ≥ 2 tokens, got 4,1/);
  refused([STORIES, '--calib-seed', '3'], undefined, /'--calib-seed' needs --calib, --calib-generate or --imatrix/);
  refused([STORIES, '--calib', json('a.json', [[1, 2]]), '--imatrix', ggufWide], undefined, /exactly one source/);
  refused(
    [STORIES, '--calib', json('b.json', [[1, 2]]), '--calib-ridge', '-1'],
    undefined,
    /ridge must be a number ≥ 0/,
  );
  const ids = json('c.json', [[1, 2]]);
  refused([STORIES, '--calib', ids, '--calib-products', 'fp16'], undefined, /products must be auto or float32/);
  refused([STORIES, '--imatrix', ggufWide, '--calib-products', 'float32'], undefined, /an imatrix has no pass/);
});
