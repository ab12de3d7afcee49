import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot, tempDir } from '../helpers';

const CLI = path.join(repoRoot, 'dist', 'cli.js');
const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

function oneLineError(r: ReturnType<typeof run>, code: number, pattern: RegExp) {
  assert.equal(r.status, code, `exit code (stderr: ${r.stderr})`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line, got: ${r.stderr}`);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
}

test('bad usage exits 2 with one line', () => {
  oneLineError(run('quantize'), 2, /^loftq: quantize takes one checkpoint/);
  oneLineError(run('quantize', STORIES), 2, /--out DIR' is required/);
  oneLineError(
    run('quantize', STORIES, '--out', tempDir(), '--bits', '5'),
    2,
    /'--bits' must be one of 1, 2, 3, 4, 8, got 5/,
  );
  oneLineError(
    run('quantize', STORIES, '--out', tempDir(), '--rank', '65'),
    2,
    /rank 65 exceeds min\(out, in\) = 64 for model\.layers\.0\.self_attn\.q_proj\.weight/,
  );
  oneLineError(run('quantize', STORIES, '--out', tempDir(), '--frobnicate'), 2, /unknown option '--frobnicate'/);
  oneLineError(run('quantize', STORIES, '--out', tempDir(), '--backend', 'quantum'), 2, /'--backend' must be/);
  assert.equal(run('nonsense').status, 2);
  // Pathological --target globs (issue 14.6): answered at once, a refusal names the pattern.
  oneLineError(
    run('quantize', STORIES, '--out', tempDir(), '--target', 'x.{0..100000}'.repeat(100)),
    2,
    /^loftq: target 'x\.\{0\.\.100000\}x.*…': bad pattern: pattern has more than 200000 alternatives$/,
  );
  oneLineError(
    run('quantize', STORIES, '--out', tempDir(), '--target', '********************X'),
    2,
    /no tensor matches the targets \(\*{20}X\)/,
  );
});

test('bad input names the file and the problem (exit 2), pickle refused with a conversion hint', () => {
  const dir = tempDir();
  const bin = path.join(dir, 'pytorch_model.bin');
  fs.writeFileSync(bin, Buffer.from([0x80, 0x02, 0x7d, 0x71, 0x00]));
  oneLineError(
    run('inspect', bin),
    2,
    new RegExp(`${bin.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: is a pickle checkpoint.*safe_serialization=True`),
  );
  oneLineError(run('quantize', dir, '--out', tempDir()), 2, /pytorch_model\.bin: is a pickle checkpoint/);
  const bad = path.join(dir, 'broken.safetensors');
  fs.writeFileSync(
    bad,
    Buffer.concat([
      Buffer.from([16, 0, 0, 0, 0, 0, 0, 0]),
      Buffer.from('{"w":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}'),
    ]),
  );
  oneLineError(run('inspect', bad), 2, /broken\.safetensors: /);
  oneLineError(run('inspect', path.join(dir, 'missing.safetensors')), 2, /missing\.safetensors: does not exist/);
});

test('quantize --json prints the report; inspect summarises the header', () => {
  const out = tempDir();
  const r = run('quantize', STORIES, '--out', out, '--bits', '4', '--rank', '4', '--iters', '1', '--json', '--quiet');
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.deepEqual(report, JSON.parse(fs.readFileSync(path.join(out, 'loftq-report.json'), 'utf8')));
  assert.equal(report.settings.bits, 4);
  assert.equal(report.matrices.length, 35);
  const i = run('inspect', STORIES, '--json');
  assert.equal(i.status, 0);
  const info = JSON.parse(i.stdout);
  assert.equal(info.totals.tensors, 47);
  assert.equal(info.totals.parameters, 260032);
});

test('Ctrl-C (SIGINT) cancels cleanly: exit 130 and no files left in the output folder', async () => {
  const out = tempDir();
  const child = spawn(process.execPath, [
    CLI,
    'quantize',
    path.join(repoRoot, 'test', 'fixtures', 'real', 'tiny-llm'),
    '--out',
    out,
    '--bits',
    '2',
    '--rank',
    '16',
    '--iters',
    '40',
    '--workers',
    '1',
  ]);
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  await new Promise<void>((resolve) => {
    const poll = setInterval(() => {
      if (stderr.includes('[1/')) {
        clearInterval(poll);
        child.kill('SIGINT');
        resolve();
      }
    }, 20);
  });
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  assert.equal(code, 130, stderr);
  assert.deepEqual(fs.readdirSync(out), []);
});

test('quantize --plan: the report settings are the plan defaults, not the CLI defaults (issue 13.7)', () => {
  const dir = tempDir();
  const plan = path.join(dir, 'loftq.json');
  fs.writeFileSync(
    plan,
    JSON.stringify({
      checkpoint: STORIES,
      defaults: { bits: 2, rank: 4, iters: 1, blockSize: 32 },
      overrides: [{ match: '**.q_proj', bits: 3 }],
    }),
  );
  const out = path.join(dir, 'out');
  const r = run('quantize', '--plan', plan, '--out', out, '--json', '--quiet');
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(fs.readFileSync(path.join(out, 'loftq-report.json'), 'utf8'));
  assert.deepEqual({ ...report.settings }, { bits: 2, rank: 4, iters: 1, quantizer: 'nf', blockSize: 32 });
  // And the matrices the defaults applied to carry exactly those settings.
  const plain = report.matrices.find((m: { name: string }) => m.name === 'model.layers.0.mlp.up_proj.weight');
  assert.deepEqual([plain.bits, plain.rank, plain.iters, plain.blockSize], [2, 4, 1, 32]);
  const config = JSON.parse(fs.readFileSync(path.join(out, 'loftq_init', 'adapter_config.json'), 'utf8'));
  assert.equal(config.r, 4);
});
