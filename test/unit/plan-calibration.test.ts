// The plan file's `calibration` block (issue 26 §1): parsed with problems at their JSON paths,
// and meaning, field by field, what `loftq quantize`'s calibration options mean — the same
// CalibrationParams from either, the same refusals, and a `quantize --plan` run calibrated by it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parsePlan } from '../../server/src/plan/planfile';
import { calibrationArgs, describeCalibration, resolveCalibration } from '../../server/src/plan/calibration';
import { parseArgs } from '../../server/src/cli/args';
import { CALIBRATION_OPTIONS, calibrationFrom } from '../../server/src/cli/calibrationOptions';
import type { CalibrationParams } from '../../server/src/protocol/lsp_ext';
import { CALIBRATION_SPECS, calibrationOfFile, heldOutSeed, parseSampleSizes } from '../../server/src/registry';
import { fixture, repoRoot, tempDir } from '../helpers';

const plan = (calibration: unknown) => JSON.stringify({ checkpoint: './model.safetensors', calibration });
const problemsOf = (calibration: unknown) =>
  parsePlan(plan(calibration)).problems.map((p) => ({ path: p.path.join('.'), message: p.message }));
const cli = (args: string[], planBlock?: CalibrationParams) =>
  calibrationFrom(parseArgs(args, CALIBRATION_OPTIONS).options, planBlock);

const VALID: CalibrationParams[] = [
  { generate: { sequences: 16, length: 128 } },
  { generate: { sequences: 4, length: 64, seed: 7 }, ridge: 0.1, products: 'float32' },
  { file: 'calib/tokens.json' },
  { file: 'notes.txt', ridge: 0 },
  { imatrix: 'model.imatrix', ridge: 0.05 },
];

test('a valid calibration block parses into the CalibrationParams it spells', () => {
  for (const c of VALID) {
    const { plan: p, problems } = parsePlan(plan(c));
    assert.deepEqual(problems, [], JSON.stringify(c));
    assert.deepEqual(p.calibration, c);
  }
  // No block: no calibration, and no key in the parsed plan.
  assert.equal('calibration' in parsePlan(JSON.stringify({ checkpoint: 'x' })).plan, false);
});

test('bad entries are errors at the key they are about, with the registry ranges', () => {
  const g = CALIBRATION_SPECS;
  assert.deepEqual(problemsOf({}), [
    { path: 'calibration', message: "'calibration' needs one source: 'generate', 'file' or 'imatrix'" },
  ]);
  assert.deepEqual(problemsOf({ file: 'a.json', imatrix: 'b.dat' }), [
    {
      path: 'calibration.imatrix',
      message: "'calibration' takes one source; 'file' is already given, remove 'imatrix' or it",
    },
  ]);
  assert.deepEqual(problemsOf({ generate: { sequences: 0, length: g.generateLength.max + 1, seed: -1 } }), [
    { path: 'calibration.generate.sequences', message: "'sequences' must be an integer ≥ 1 (got 0)" },
    {
      path: 'calibration.generate.length',
      message: `'length' must be an integer ≤ ${g.generateLength.max} (got ${g.generateLength.max + 1})`,
    },
    { path: 'calibration.generate.seed', message: "'seed' must be an integer ≥ 0 (got -1)" },
  ]);
  assert.deepEqual(problemsOf({ generate: { sequences: 4 } }), [
    { path: 'calibration.generate', message: `'generate' needs 'length' (${g.generateLength.description})` },
  ]);
  assert.deepEqual(problemsOf({ generate: { sequences: 4, length: 8, seeds: 1 } }), [
    {
      path: 'calibration.generate.seeds',
      message: "unknown key 'seeds' in 'generate' ('sequences', 'length', 'seed')",
    },
  ]);
  assert.deepEqual(problemsOf({ file: '' }), [
    { path: 'calibration.file', message: "'file' must be the path of a file, relative to this plan" },
  ]);
  assert.match(problemsOf({ file: 'a.json', ridge: -1 })[0].message, /^'ridge' must be a number ≥ 0 \(got -1\)$/);
  assert.deepEqual(problemsOf({ file: 'a.json', products: 'bf16' }), [
    { path: 'calibration.products', message: `'products' must be "auto" or "float32"` },
  ]);
  assert.deepEqual(problemsOf({ imatrix: 'a.dat', products: 'float32' }), [
    {
      path: 'calibration.products',
      message: "'products' choose how the calibration pass runs; an imatrix has no pass",
    },
  ]);
  assert.deepEqual(problemsOf({ file: 'a.json', rdige: 0.1 }), [
    {
      path: 'calibration.rdige',
      message: "unknown calibration key 'rdige' ('generate', 'file', 'imatrix', 'ridge', 'products')",
    },
  ]);
  assert.equal(problemsOf([1])[0].path, 'calibration');
  // A plan with a bad block parses the rest, but carries no calibration.
  assert.equal(parsePlan(plan({ generate: { sequences: 0, length: 8 } })).plan.calibration, undefined);
});

test('the plan block and the CLI options mean the same CalibrationParams, field by field', () => {
  const planFile = path.join('/work', 'proj', 'loftq.json');
  for (const c of VALID) {
    const resolved = resolveCalibration(planFile, c);
    // The CLI options written for the block give the block (its paths as the plan resolves them).
    assert.deepEqual(cli(calibrationArgs(resolved)), resolved, calibrationArgs(c).join(' '));
    // `quantize --plan` with no calibration option runs the plan's block as it stands.
    assert.deepEqual(cli([], resolved), resolved);
  }
  assert.deepEqual(resolveCalibration(planFile, { file: 'calib/tokens.json' }), {
    file: path.join('/work', 'proj', 'calib', 'tokens.json'),
  });
  assert.deepEqual(calibrationArgs(VALID[1]), [
    '--calib-generate',
    '4,64',
    '--calib-seed',
    '7',
    '--calib-ridge',
    '0.1',
    '--calib-products',
    'float32',
  ]);
});

test('the CLI refuses what the plan file refuses (sizes, ridge, products with an imatrix)', () => {
  const bad: [CalibrationParams, RegExp][] = [
    [{ generate: { sequences: 0, length: 8 } }, /--calib-generate takes N,LEN/],
    [{ generate: { sequences: 2, length: 1 } }, /--calib-generate takes N,LEN/],
    [{ generate: { sequences: 2, length: 8, seed: 2 ** 32 } }, /seed must be an integer ≤ 4294967295/],
    [{ file: 'a.json', ridge: -0.5 }, /ridge must be a number ≥ 0/],
    [{ imatrix: 'a.dat', products: 'float32' }, /an imatrix has no pass/],
  ];
  for (const [c, why] of bad) {
    assert.ok(parsePlan(plan(c)).problems.length > 0, `the plan refuses ${JSON.stringify(c)}`);
    assert.throws(() => cli(calibrationArgs(c)), why, `the CLI refuses ${calibrationArgs(c).join(' ')}`);
  }
});

test('with a plan block: a CLI source replaces it, field options change it, --no-calib drops it', () => {
  const block: CalibrationParams = { generate: { sequences: 16, length: 128 }, ridge: 0.01 };
  assert.deepEqual(cli(['--calib', 'x.json'], block), { file: 'x.json' });
  assert.deepEqual(cli(['--calib-seed', '3', '--calib-ridge', '0.2'], block), {
    generate: { sequences: 16, length: 128, seed: 3 },
    ridge: 0.2,
  });
  assert.deepEqual(block, { generate: { sequences: 16, length: 128 }, ridge: 0.01 }, 'the block is not changed');
  assert.equal(cli(['--no-calib'], block), undefined);
  assert.throws(() => cli(['--no-calib', '--calib-ridge', '1'], block), /'--no-calib' cannot go with '--calib-ridge'/);
  assert.throws(() => cli(['--calib-seed', '1'], { file: 'a.json' }), /goes with a sampled calibration/);
  assert.throws(() => cli(['--calib-ridge', '1']), /needs --calib, --calib-generate or --imatrix/);
});

test('describeCalibration says the source in words', () => {
  assert.equal(
    describeCalibration({ generate: { sequences: 16, length: 128 } }),
    '16 sequences × 128 tokens sampled from the model (seed 0)',
  );
  assert.equal(describeCalibration({ imatrix: 'a/b.dat', ridge: 0.1 }), 'importance matrix b.dat, ridge 0.1');
  assert.equal(describeCalibration({ file: 'x/t.json' }), 'tokens of t.json');
});

test("loftq quantize --plan: the plan's calibration block calibrates the run (files relative to the plan)", () => {
  const dir = tempDir();
  fs.cpSync(path.join(repoRoot, 'examples', 'stories260k'), path.join(dir, 'ck'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'calib'));
  const ids = JSON.parse(fs.readFileSync(fixture('stories260k-tokens.json'), 'utf8')) as number[][];
  fs.writeFileSync(path.join(dir, 'calib', 'ids.json'), JSON.stringify(ids.slice(0, 2).map((s) => s.slice(0, 24))));
  const planFile = path.join(dir, 'loftq.json');
  fs.writeFileSync(
    planFile,
    JSON.stringify({
      checkpoint: './ck',
      defaults: { bits: 4, rank: 4, iters: 1 },
      targets: ['model.layers.0.self_attn.q_proj'],
      calibration: { file: 'calib/ids.json', ridge: 0.05 },
    }),
  );
  const out = path.join(dir, 'out');
  const r = spawnSync(
    process.execPath,
    [path.join(repoRoot, 'dist', 'cli.js'), 'quantize', '--plan', planFile, '--out', out, '--quiet'],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(fs.readFileSync(path.join(out, 'loftq-report.json'), 'utf8'));
  assert.equal(report.calibration.source, 'tokens');
  assert.equal(report.calibration.file, path.join(dir, 'calib', 'ids.json'));
  assert.equal(report.calibration.ridge, 0.05);
  assert.equal(report.calibration.sequences, 2);
  assert.ok(report.matrices[0].outputRelError > 0);
  // A bad block is refused in one line naming the plan and the key, before anything is written.
  fs.writeFileSync(
    planFile,
    JSON.stringify({ checkpoint: './ck', calibration: { generate: { sequences: 0, length: 8 } } }),
  );
  const bad = spawnSync(
    process.execPath,
    [path.join(repoRoot, 'dist', 'cli.js'), 'quantize', '--plan', planFile, '--out', path.join(dir, 'o2')],
    { encoding: 'utf8' },
  );
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr.trim(), /loftq\.json.*calibration\.generate\.sequences: 'sequences' must be an integer ≥ 1/);
  assert.equal(fs.existsSync(path.join(dir, 'o2')), false);
});

test("the wizard's words: N,LEN sizes within the sampler's ranges, files by extension, held-out seeds", () => {
  assert.deepEqual(parseSampleSizes('32,256'), { sequences: 32, length: 256 });
  assert.deepEqual(parseSampleSizes(' 8 × 64 '), { sequences: 8, length: 64 });
  const { generateSequences: n, generateLength: len } = CALIBRATION_SPECS;
  const want = `N,LEN: ${n.min}–${n.max} sequences of ${len.min}–${len.max} tokens`;
  assert.equal(parseSampleSizes('0,64'), want);
  assert.equal(parseSampleSizes('8,1'), want);
  assert.equal(parseSampleSizes(`8,${len.max + 1}`), want);
  assert.equal(typeof parseSampleSizes('lots'), 'string');
  assert.deepEqual(calibrationOfFile('/d/model.gguf'), { imatrix: '/d/model.gguf' });
  assert.deepEqual(calibrationOfFile('/d/imatrix.dat'), { imatrix: '/d/imatrix.dat' });
  assert.deepEqual(calibrationOfFile('/d/ids.json'), { file: '/d/ids.json' });
  assert.deepEqual(calibrationOfFile('/d/book.txt'), { file: '/d/book.txt' });
  assert.equal(heldOutSeed(undefined), 1);
  assert.equal(heldOutSeed(0), 1);
  assert.equal(heldOutSeed(41), 42);
  assert.equal(heldOutSeed(0xffffffff), 0, 'wraps within the seed range');
  assert.notEqual(heldOutSeed(7), 7);
});
