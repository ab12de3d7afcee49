// The registry of domain facts (server/src/registry): its ranges reach every entry point
// (issue 14.7: a block size of 2^31 used to die in the kernels with "memory access out of
// bounds"), its quantizers all have codebooks, and it stays importable by the client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot, tempDir } from '../helpers';
import {
  backboneBytesOf,
  DEFAULT_SETTINGS,
  matrixSettingsProblem,
  MATRIX_SETTING_SPECS,
  offeredRanks,
  oneOf,
  QUANTIZER_NAMES,
  QUANTIZERS,
  isCodebookQuantizer,
  scaleBytesOf,
  SUPPORTED_BITS,
  validOr,
  valueProblem,
} from '../../server/src/registry';
import { codebook } from '../../server/src/quant/codebook';
import { quantize } from '../../server/src/quant/quantize';
import { parsePlan } from '../../server/src/plan/planfile';
import { normalizeSettings } from '../../server/src/lsp/settings';
import { checkSettings } from '../../server/src/engine/run';

const CLI = path.join(repoRoot, 'dist', 'cli.js');
const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const cli = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

function oneLine(r: ReturnType<typeof cli>, pattern: RegExp) {
  assert.equal(r.status, 2, `exit code (stderr: ${r.stderr})`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line, got: ${r.stderr}`);
  assert.match(lines[0], pattern);
}

test('CLI: block size, rank and iters past their range exit 2 with one line, nothing written', () => {
  const out = path.join(tempDir(), 'out');
  oneLine(
    cli('quantize', STORIES, '--out', out, '--block-size', String(2 ** 31)),
    /^loftq: option '--block-size' must be at most 1073741824, got 2147483648$/,
  );
  oneLine(
    cli('quantize', STORIES, '--out', out, '--rank', '70000'),
    /^loftq: option '--rank' must be at most 65536, got 70000$/,
  );
  oneLine(
    cli('quantize', STORIES, '--out', out, '--iters', '5000'),
    /^loftq: option '--iters' must be at most 1000, got 5000$/,
  );
  oneLine(
    cli('analyze', STORIES, '--report', path.join(out, 'r.json'), '--block-size', String(2 ** 40)),
    /'--block-size' must be at most/,
  );
  assert.equal(fs.existsSync(out), false);
  // The same range inside a plan file: the plan is refused, naming the file and the key.
  const dir = tempDir();
  const plan = path.join(dir, 'loftq.json');
  fs.writeFileSync(plan, JSON.stringify({ checkpoint: STORIES, defaults: { blockSize: 2 ** 31 } }));
  oneLine(
    cli('quantize', '--plan', plan, '--out', out),
    /loftq\.json: defaults\.blockSize: 'blockSize' must be an integer ≤ 1073741824/,
  );
  assert.equal(fs.existsSync(out), false);
});

test('the largest block size the registry allows runs (the bound is not too tight)', () => {
  const out = path.join(tempDir(), 'out');
  const r = cli(
    'quantize',
    STORIES,
    '--out',
    out,
    '--block-size',
    String(MATRIX_SETTING_SPECS.blockSize.max),
    '--rank',
    '2',
    '--iters',
    '1',
    '--target',
    '**.layers.0.**.q_proj',
    '--backend',
    'cpu',
    '--workers',
    '1',
    '--quiet',
    '--json',
  );
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.matrices[0].blockSize, 2 ** 30);
});

test('plan, engine, server settings and loftq/quantize share the ranges', () => {
  const atBounds = { checkpoint: 'm', defaults: { rank: 65536, iters: 1000, blockSize: 2 ** 30 } };
  assert.deepEqual(parsePlan(JSON.stringify(atBounds)).problems, [], 'the bounds themselves are allowed');
  assert.throws(
    () => checkSettings({ ...DEFAULT_SETTINGS, blockSize: 2 ** 31 }),
    /^UsageError: block size must be an integer ≤ 1073741824, got 2147483648$/,
  );
  assert.throws(
    () => checkSettings({ ...DEFAULT_SETTINGS, quantizer: 'int' as never }),
    /quantizer must be nf, uniform or hqq, got 'int'/,
  );
  // A client's out-of-range setting falls back to the default rather than reaching the engine.
  assert.equal(normalizeSettings({ defaults: { blockSize: 2 ** 31, rank: 0, iters: 7 } }).defaults.blockSize, 64);
  assert.deepEqual(normalizeSettings({ defaults: { rank: 0, iters: 7 }, workers: -1, backend: 'x' }), {
    ...normalizeSettings(undefined),
    defaults: { ...DEFAULT_SETTINGS, iters: 7 },
  });
  const halfRank = matrixSettingsProblem({ ...DEFAULT_SETTINGS, rank: 1.5 });
  assert.deepEqual(halfRank, { key: 'rank', expected: 'an integer ≥ 1' });
  assert.equal(matrixSettingsProblem(DEFAULT_SETTINGS), undefined);
});

test('value checks: lists, integer ranges, numbers', () => {
  assert.equal(valueProblem(MATRIX_SETTING_SPECS.bits, 5), '1, 2, 3, 4 or 8');
  assert.equal(valueProblem(MATRIX_SETTING_SPECS.quantizer, 'x', true), '"nf", "uniform" or "hqq"');
  assert.equal(valueProblem(MATRIX_SETTING_SPECS.rank, '4'), 'an integer ≥ 1');
  assert.equal(valueProblem(MATRIX_SETTING_SPECS.rank, 65537), 'an integer ≤ 65536');
  assert.equal(valueProblem(MATRIX_SETTING_SPECS.iters, 1), undefined);
  assert.equal(validOr(MATRIX_SETTING_SPECS.rank, Number.NaN), 16);
  assert.equal(oneOf(['a']), 'a');
});

test('every codebook quantizer has a codebook at each of its widths, and its scale rule is the one used', () => {
  for (const q of QUANTIZER_NAMES) {
    if (!isCodebookQuantizer(q)) {
      // An affine grid (HQQ): no table, and codebook() says so instead of building one.
      assert.throws(() => codebook(q, QUANTIZERS[q].bits[0]), /has no codebook \(an affine grid\)/);
      continue;
    }
    for (const bits of QUANTIZERS[q].bits) {
      const t = codebook(q, bits);
      assert.equal(t.length, 2 ** bits, `${q}${bits}`);
      for (let i = 1; i < t.length; i++) assert.ok(t[i] > t[i - 1], `${q}${bits} ascending`);
      assert.ok(t[0] >= -1 && t[t.length - 1] <= 1);
    }
    assert.throws(() => codebook(q, 5), /unsupported bit width 5/);
  }
  const allBits = [...new Set(QUANTIZER_NAMES.flatMap((q) => [...QUANTIZERS[q].bits]))].sort();
  assert.deepEqual(allBits, [...SUPPORTED_BITS]);
  // absmax: the block's largest magnitude maps onto ±1; meanStd scales by mean + 2.5σ (sample σ) instead.
  const v = [0.1, -0.2, 0.3, 4];
  const x = Float32Array.from(v);
  assert.equal(quantize(x, codebook('nf', 4), 'nf', 4).scales[0], 4);
  const mean = v.reduce((s, a) => s + a, 0) / 4;
  const sd = Math.sqrt(v.reduce((s, a) => s + (a - mean) ** 2, 0) / 3);
  const scale = quantize(x, codebook('uniform', 4), 'uniform', 4).scales[0];
  assert.ok(Math.abs(scale - (mean + 2.5 * sd)) < 1e-5);
});

test('planner ranks and byte accounting', () => {
  assert.deepEqual(offeredRanks(), [8, 16, 32, 64]);
  assert.deepEqual(offeredRanks(64), [8, 16, 32, 64]);
  assert.deepEqual(offeredRanks(128), [8, 16, 32, 64]);
  assert.deepEqual(offeredRanks(20), [8, 16, 20]);
  assert.deepEqual(offeredRanks(4), [4]);
  // 4096×4096 at block 64: 262144 blocks; fp32 = 4 bytes each; dq = 1 byte each + 1024 fp32 + 1 fp32.
  assert.equal(scaleBytesOf(4096, 4096, 64, 'fp32'), 1_048_576);
  assert.equal(scaleBytesOf(4096, 4096, 64, 'dq'), 262_144 + 4096 + 4);
  assert.equal(backboneBytesOf(3, 5, 3, 4, 'fp32'), 6 + 16);
});

test('the registry imports nothing outside its folder (the client and webviews use it)', () => {
  const dir = path.join(repoRoot, 'server', 'src', 'registry');
  for (const f of fs.readdirSync(dir)) {
    const imports = [...fs.readFileSync(path.join(dir, f), 'utf8').matchAll(/\bfrom\s+'([^']+)'/g)].map((m) => m[1]);
    for (const i of imports) assert.ok(i.startsWith('./'), `${f} imports ${i}`);
  }
});
