// The model-level half of the product on every family, as a user runs it: a calibrated
// `loftq quantize --calib` then `loftq eval` on each fixture of test/fixtures/arch (transformers
// 4.49 checkpoints). The statistics reach every target matrix (Phi-3's fused qkv_proj and
// gate_up_proj under their own names, in the report and adapter_config.json's target_modules), and
// eval's original perplexity is transformers' within 0.1 % on the fixture's tokens.
// --calib-generate runs on Gemma 2 and Phi-3. An unsupported model_type or rope type stops a
// calibrated run and eval in one line (config.json, the field, the supported list) before anything
// is written; plain quantize still runs on them.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Report } from '../../server/src/protocol/lsp_ext';
import { fixture, repoRoot, tempDir } from '../helpers';

const CLI = path.join(repoRoot, 'dist', 'cli.js');
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
const FAST = ['--bits', '4', '--rank', '4', '--iters', '2', '--quiet', '--workers', '0'];

/** Linear weights per layer and their short names, per family. */
const LINEARS: Record<string, string[]> = {
  llama: ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj'],
  phi: ['dense', 'fc1', 'fc2', 'k_proj', 'q_proj', 'v_proj'],
  phi3: ['down_proj', 'gate_up_proj', 'o_proj', 'qkv_proj'],
};
const FAMILIES: [string, string[]][] = [
  ['qwen2', LINEARS.llama],
  ['qwen2-tied', LINEARS.llama],
  ['llama3', LINEARS.llama],
  ['mistral', LINEARS.llama],
  ['gemma', LINEARS.llama],
  ['gemma2', LINEARS.llama],
  ['phi', LINEARS.phi],
  ['phi3', LINEARS.phi3],
];

/** transformers' perplexity on the fixture's tokens, from its float32 log-probabilities (.npy). */
function referencePpl(dir: string, tokens: number[][]): number {
  const b = fs.readFileSync(path.join(dir, 'reference_logprobs.npy'));
  const headerLen = b.readUInt16LE(8),
    off = 10 + headerLen;
  assert.match(b.subarray(10, off).toString('latin1'), /'descr': '<f4'.*'shape': \(4, 32, 512\)/);
  let nll = 0,
    n = 0;
  tokens.forEach((seq, k) => {
    for (let i = 0; i + 1 < seq.length; i++) {
      nll -= b.readFloatLE(off + 4 * ((k * 32 + i) * 512 + seq[i + 1]));
      n++;
    }
  });
  return Math.exp(nll / n);
}

function oneLine(r: ReturnType<typeof run>, ...parts: (string | RegExp)[]): void {
  assert.equal(r.status, 2, `exit code (stderr: ${r.stderr})`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line, got: ${r.stderr}`);
  for (const p of parts) {
    if (typeof p === 'string') assert.ok(lines[0].includes(p), `'${p}' in: ${lines[0]}`);
    else assert.match(lines[0], p);
  }
}

for (const [family, linears] of FAMILIES) {
  test(`${family}: calibrated quantize, then loftq eval with transformers' perplexity`, () => {
    const dir = fixture('arch', family);
    const tmp = tempDir('loftq-arch-cli-');
    try {
      const tokens = (JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8')) as { tokens: number[][] })
        .tokens;
      const calib = path.join(tmp, 'calib.json'),
        held = path.join(tmp, 'eval.json');
      fs.writeFileSync(calib, JSON.stringify(tokens.slice(0, 2)));
      fs.writeFileSync(held, JSON.stringify(tokens));
      const out = path.join(tmp, 'out');
      // Phi-3's fused matrices by name (the default targets are the engine's to extend).
      const targets = family === 'phi3' ? ['--target', linears.join(',')] : [];
      const q = run('quantize', dir, '--out', out, ...FAST, ...targets, '--calib', calib, '--json');
      assert.equal(q.status, 0, q.stderr);
      const report = JSON.parse(q.stdout) as Report;
      assert.equal(report.calibration?.source, 'tokens');
      assert.equal(report.calibration?.tokens, 64);
      const names = report.matrices.map((m) => m.name.split('.').slice(-2, -1)[0]);
      assert.deepEqual([...new Set(names)].sort(), linears, 'every linear weight, under its own name');
      assert.equal(report.matrices.length, 2 * linears.length);
      for (const m of report.matrices) {
        assert.equal(typeof m.outputRelError, 'number', `${m.name} calibrated`);
        assert.ok(m.outputRelError! < m.qloraOutputRelError!, `${m.name}: LoftQ below QLoRA in the metric`);
      }
      const adapter = JSON.parse(fs.readFileSync(path.join(out, 'loftq_init', 'adapter_config.json'), 'utf8'));
      // One regex over full module names (PEFT fullmatches it): exactly the quantized matrices.
      const wrapped = report.matrices.filter((m) =>
        new RegExp(`^(?:${adapter.target_modules})$`).test(m.name.replace(/\.weight$/, '')),
      );
      assert.equal(wrapped.length, report.matrices.length);
      assert.deepEqual(
        [
          ...new Set(
            report.matrices.map((m) =>
              m.name
                .replace(/\.weight$/, '')
                .split('.')
                .pop(),
            ),
          ),
        ].sort(),
        linears,
      );

      const e = run('eval', dir, out, '--tokens', held, '--json', '--quiet');
      assert.equal(e.status, 0, e.stderr);
      const ev = JSON.parse(e.stdout);
      const ref = referencePpl(dir, tokens);
      assert.ok(Math.abs(ev.original.ppl / ref - 1) <= 1e-3, `original ppl ${ev.original.ppl} vs transformers' ${ref}`);
      assert.ok(ev.loftq.kl > 0 && ev.loftq.kl < ev.qlora.kl, `LoftQ KL ${ev.loftq.kl} vs QLoRA ${ev.qlora.kl}`);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
}

test('--calib-generate on Gemma 2 and Phi-3: sampled from the model itself, every matrix calibrated', () => {
  const tmp = tempDir('loftq-arch-cli-');
  try {
    for (const family of ['gemma2', 'phi3']) {
      const out = path.join(tmp, family);
      const targets = family === 'phi3' ? ['--target', LINEARS.phi3.join(',')] : [];
      const r = run('quantize', fixture('arch', family), '--out', out, ...FAST, ...targets, '--calib-generate', '2,12');
      assert.equal(r.status, 0, r.stderr);
      const report = JSON.parse(fs.readFileSync(path.join(out, 'loftq-report.json'), 'utf8')) as Report;
      assert.equal(report.calibration?.source, 'generated');
      assert.equal(report.calibration?.tokens, 24);
      assert.ok(report.matrices.every((m) => typeof m.outputRelError === 'number'));
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('unsupported model_type or rope type: calibration and eval refused in one line; plain quantize runs', () => {
  const tmp = tempDir('loftq-arch-cli-');
  try {
    const variant = (name: string, edit: (c: Record<string, unknown>) => void) => {
      const dir = path.join(tmp, name);
      fs.mkdirSync(dir);
      fs.copyFileSync(fixture('arch', 'phi3', 'model.safetensors'), path.join(dir, 'model.safetensors'));
      const c = JSON.parse(fs.readFileSync(fixture('arch', 'phi3', 'config.json'), 'utf8'));
      edit(c);
      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(c));
      return dir;
    };
    const ids = path.join(tmp, 'ids.json');
    fs.writeFileSync(ids, JSON.stringify([[1, 5, 9, 200, 17]]));
    const cases: [string, (string | RegExp)[]][] = [
      [
        variant('neox', (c) => (c.model_type = 'gpt_neox')),
        ["model_type 'gpt_neox' is not supported", 'supported: llama, mistral, qwen2, gemma, gemma2, phi, phi3'],
      ],
      [
        variant('longrope', (c) => (c.rope_scaling = { rope_type: 'longrope', short_factor: [1], long_factor: [1] })),
        ["field 'rope_scaling' has rope_type 'longrope'", 'supported: default, linear, dynamic, yarn, llama3'],
      ],
    ];
    for (const [dir, parts] of cases) {
      const config = path.join(dir, 'config.json');
      for (const source of [
        ['--calib', ids],
        ['--calib-generate', '2,8'],
      ]) {
        const out = path.join(tmp, 'out-refused');
        oneLine(run('quantize', dir, '--out', out, ...FAST, ...source), config, ...parts);
        assert.ok(!fs.existsSync(out), `nothing written (${source[0]})`);
      }
      const plain = path.join(tmp, `plain-${path.basename(dir)}`);
      const p = run('quantize', dir, '--out', plain, ...FAST);
      assert.equal(p.status, 0, p.stderr);
      const report = fs.readFileSync(path.join(plain, 'loftq-report.json'));
      oneLine(run('eval', dir, plain, '--tokens', ids), config, ...parts);
      assert.ok(fs.readFileSync(path.join(plain, 'loftq-report.json')).equals(report), 'report untouched');
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
