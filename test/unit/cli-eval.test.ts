// `loftq eval` as a user runs it: the table and --json, the report's model block written (and
// not written with --no-report-update), bad token files and mismatched folders refused in one
// line with exit 2 and nothing written, Ctrl-C exiting 130 with the old report whole.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { quantizeCheckpoint } from '../../server/src/engine/run';
import { makeTinyModel } from '../model-reference';
import { fixture, repoRoot, tempDir } from '../helpers';

const CLI = path.join(repoRoot, 'dist', 'cli.js');
const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const TOKENS = fixture('stories260k-tokens.json');
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

let shared: string | undefined;
async function stories(): Promise<string> {
  if (!shared) {
    shared = tempDir();
    const settings = { bits: 4, rank: 16, iters: 2, quantizer: 'nf' as const, blockSize: 64 };
    await quantizeCheckpoint(STORIES, { out: shared, workers: 'in-thread', settings });
  }
  return shared;
}

function oneLineError(r: ReturnType<typeof run>, pattern: RegExp) {
  assert.equal(r.status, 2, `exit code (stderr: ${r.stderr})`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line, got: ${r.stderr}`);
  assert.match(lines[0], pattern);
}

test('--json prints the three blocks, the report gains the same model block; the table shows both inits', async () => {
  const out = await stories();
  const before = JSON.parse(fs.readFileSync(path.join(out, 'loftq-report.json'), 'utf8'));
  const r = run('eval', STORIES, out, '--tokens', TOKENS, '--json', '--quiet');
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  // Text sampled from the model itself: far more predictable than uniform over 512 tokens.
  assert.ok(j.original.ppl > 1 && j.original.ppl < 512, `original ppl ${j.original.ppl}`);
  for (const side of [j.loftq, j.qlora]) {
    for (const k of ['kl', 'klMedian', 'klP99', 'top1', 'ppl', 'lnPplRatio']) assert.equal(typeof side[k], 'number', k);
  }
  assert.ok(j.loftq.kl < j.qlora.kl && j.loftq.top1 > j.qlora.top1, JSON.stringify(j));
  assert.equal(j.sequences, 8);
  assert.equal(j.tokens, 512);
  const after = JSON.parse(fs.readFileSync(path.join(out, 'loftq-report.json'), 'utf8'));
  assert.deepEqual(after.model, j);
  delete after.model;
  delete before.model;
  assert.deepEqual(after, before, 'nothing else in the report changes');
  assert.ok(!fs.existsSync(path.join(out, '.loftq.lock')), 'the lock is released');

  const t = run('eval', STORIES, out, '--tokens', TOKENS, '--no-report-update', '--quiet');
  assert.equal(t.status, 0, t.stderr);
  assert.match(t.stdout, /^original\s+[\d.]+\s*$/m);
  assert.match(t.stdout, new RegExp(`^loftq\\s+${j.loftq.kl.toFixed(4)}\\s+${j.loftq.klMedian.toFixed(4)}\\s`, 'm'));
  assert.match(t.stdout, new RegExp(`^qlora\\s+${j.qlora.kl.toFixed(4)}\\s`, 'm'));
  assert.match(t.stdout, /report not updated/);
});

test('bad token files: one line naming the file, exit 2, the report untouched', async () => {
  const out = await stories();
  const report = fs.readFileSync(path.join(out, 'loftq-report.json'));
  const dir = tempDir();
  const file = (name: string, text: string) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, text);
    return p;
  };
  const cases: [string, RegExp][] = [
    [file('empty.json', ''), /empty\.json: is empty/],
    [file('none.json', '[]'), /none\.json: holds no token sequences/],
    [file('vocab.json', '[[1, 2, 512]]'), /vocab\.json: sequence 0, position 2: token id 512 is outside the vocab/],
    [file('short.json', '[[1, 2, 3], [7]]'), /short\.json: sequence 1 has 1 token; each needs at least 2/],
    [file('text.json', '{"ids": [1, 2]}'), /text\.json: must be a JSON array of token-id sequences/],
    [path.join(dir, 'missing.json'), /missing\.json: does not exist/],
  ];
  for (const [f, re] of cases) oneLineError(run('eval', STORIES, out, '--tokens', f), re);
  assert.ok(fs.readFileSync(path.join(out, 'loftq-report.json')).equals(report));
  oneLineError(run('eval', STORIES, out), /'--tokens FILE' is required/);
  oneLineError(run('eval', STORIES, '--tokens', TOKENS), /eval takes ORIGINAL and OUTDIR/);
});

test("--generate N,LEN: held-out tokens sampled from ORIGINAL with the seed after the calibration's", async () => {
  const out = tempDir();
  const settings = { bits: 4, rank: 8, iters: 1, quantizer: 'nf' as const, blockSize: 64 };
  await quantizeCheckpoint(STORIES, { out, workers: 'in-thread', settings });
  // The run's calibration sampled with seed 5 (only its seed matters to eval): held-out seed 6.
  const reportFile = path.join(out, 'loftq-report.json');
  const report = JSON.parse(fs.readFileSync(reportFile, 'utf8'));
  report.calibration = { source: 'generated', sequences: 4, tokens: 64, fullStatMaxDim: 8192, ridge: 0.01, seed: 5 };
  fs.writeFileSync(reportFile, JSON.stringify(report));
  const r = run('eval', STORIES, out, '--generate', '3,24', '--json', '--quiet');
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.deepEqual(j.generated, { sequences: 3, length: 24, seed: 6 });
  assert.equal(j.tokensFile, undefined);
  assert.equal([j.sequences, j.tokens].join(), '3,72');
  assert.deepEqual(JSON.parse(fs.readFileSync(reportFile, 'utf8')).model, j);
  // The same seed gives the same tokens, so the same figures; --seed picks another.
  const again = JSON.parse(run('eval', STORIES, out, '--generate', '3,24', '--seed', '6', '--json', '-q').stdout);
  assert.deepEqual(again, j);
  const other = run('eval', STORIES, out, '--generate', '3,24', '--seed', '9', '--no-report-update', '-q');
  assert.equal(other.status, 0, other.stderr);
  assert.match(other.stdout, /^3 sequences, 72 tokens sampled from the original \(held-out, seed 9\)/);
  oneLineError(run('eval', STORIES, out, '--generate', '0,24'), /'--generate' takes N,LEN: 1–4096 sequences/);
  oneLineError(run('eval', STORIES, out, '--generate', '2,8', '--tokens', TOKENS), /not both/);
  oneLineError(run('eval', STORIES, out, '--tokens', TOKENS, '--seed', '3'), /'--seed' goes with --generate/);
});

test('a folder not produced from ORIGINAL, or not a quantize output at all, is refused in one line', async () => {
  const tiny = tempDir(),
    tinyOut = tempDir();
  makeTinyModel(tiny, {
    model_type: 'llama',
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    vocab_size: 600,
  });
  const settings = { bits: 4, rank: 4, iters: 1, quantizer: 'nf' as const, blockSize: 64 };
  await quantizeCheckpoint(tiny, { out: tinyOut, workers: 'in-thread', settings });
  oneLineError(run('eval', STORIES, tinyOut, '--tokens', TOKENS), /safetensors: .*not produced from .*stories260k/);
  oneLineError(run('eval', STORIES, STORIES, '--tokens', TOKENS), /loftq_init\/adapter_config\.json: does not exist/);
  oneLineError(run('eval', STORIES, path.join(tempDir(), 'nowhere'), '--tokens', TOKENS), /nowhere: does not exist/);
});

test('Ctrl-C during the evaluation exits 130, leaves the report as it was and releases the lock', async () => {
  const out = await stories();
  const report = fs.readFileSync(path.join(out, 'loftq-report.json'));
  const many = path.join(tempDir(), 'many.json');
  const seqs = JSON.parse(fs.readFileSync(TOKENS, 'utf8'));
  fs.writeFileSync(many, JSON.stringify(Array.from({ length: 12 }, () => seqs).flat()));
  const args = [CLI, 'eval', STORIES, out, '--tokens', many];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  await new Promise<void>((resolve) => {
    const poll = setInterval(() => {
      if (!stderr.includes('original')) return;
      clearInterval(poll);
      child.kill('SIGINT');
      resolve();
    }, 20);
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 130, stderr);
  assert.ok(fs.readFileSync(path.join(out, 'loftq-report.json')).equals(report), 'report unchanged');
  assert.ok(!fs.existsSync(path.join(out, '.loftq.lock')), 'lock released');
  assert.deepEqual(
    fs.readdirSync(out).filter((n) => n.endsWith('.tmp')),
    [],
    'no temp files',
  );
});
