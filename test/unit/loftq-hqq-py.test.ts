// server/src/export/loftq_hqq.py ships in every `--format hqq` output folder (issue 24 §6): it loads
// the HQQ layers itself, because transformers 5.x's from_pretrained silently drops them. CI has no
// torch or hqq, so the loading is checked by hand (shared/recipes/hqq-transformers-peft-cpu.md);
// here: it compiles, it imports without torch, and its refusals are one clear line — the folder's
// config first (right whatever is installed), then the missing package.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot, tempDir } from '../helpers';

const SCRIPT = path.join(repoRoot, 'server', 'src', 'export', 'loftq_hqq.py');
const PLAIN_CONFIG = path.join(repoRoot, 'test', 'fixtures', 'real', 'stories260k', 'config.json');
const HQQ_CONFIG = path.join(repoRoot, 'test', 'fixtures', 'hqq', 'stories260k-hqq-float32', 'config.json');
const ENV = { ...process.env, PYTHONDONTWRITEBYTECODE: '1', PYTHONIOENCODING: 'utf-8' };

const python = (args: string[], cwd: string) =>
  spawnSync('python3', args, { cwd, env: ENV, encoding: 'utf8', timeout: 60_000 });

const hasPython = () => !python(['--version'], repoRoot).error;
const hasModule = (m: string) =>
  python(['-c', `import importlib.util as u, sys; sys.exit(u.find_spec('${m}') is None)`], repoRoot).status === 0;

/** A temp folder holding a copy of the script and, under model/, a config.json. */
function withScratch(config: string, body: (dir: string, model: string) => void) {
  const dir = tempDir('loftq-hqq-py-');
  try {
    fs.copyFileSync(SCRIPT, path.join(dir, 'loftq_hqq.py'));
    const model = path.join(dir, 'model');
    fs.mkdirSync(model);
    fs.copyFileSync(config, path.join(model, 'config.json'));
    body(dir, model);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('loftq_hqq.py compiles (python3 -m py_compile)', (t) => {
  if (!hasPython()) return t.skip('python3 is not installed here');
  withScratch(PLAIN_CONFIG, (dir) => {
    const r = python(['-m', 'py_compile', 'loftq_hqq.py'], dir);
    assert.equal(r.status, 0, r.stderr);
  });
});

test('loftq_hqq.py refuses a folder without an HQQ quantization_config, in one line, before importing torch', (t) => {
  if (!hasPython()) return t.skip('python3 is not installed here');
  withScratch(PLAIN_CONFIG, (dir, model) => {
    const r = python(['loftq_hqq.py', model], dir);
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stdout, '');
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(
      lines[0],
      /^loftq_hqq: .*config\.json has no HQQ quantization_config \(quant_method: None\) — not an HQQ export/,
    );
  });
});

test('loftq_hqq.py without hqq/torch: imports, and refuses an HQQ folder naming the package to install', (t) => {
  if (!hasPython()) return t.skip('python3 is not installed here');
  if (hasModule('hqq') && hasModule('torch')) return t.skip('hqq and torch are installed here: nothing is missing');
  withScratch(HQQ_CONFIG, (dir, model) => {
    const r = python(['loftq_hqq.py', model], dir);
    assert.equal(r.status, 2, r.stderr);
    const expected = hasModule('hqq')
      ? 'loftq_hqq: torch is not installed — pip install torch'
      : 'loftq_hqq: hqq is not installed — pip install hqq (≥ 0.2.1)';
    assert.equal(r.stderr.trim(), expected);
    // As a module: importing needs nothing beyond the standard library; load_model raises the same line.
    const code = [
      'import sys',
      'import loftq_hqq',
      'try:',
      `    loftq_hqq.load_model(${JSON.stringify(model)})`,
      'except loftq_hqq.LoftqHqqError as e:',
      '    print(e)',
    ].join('\n');
    const m = python(['-c', code], dir);
    assert.equal(m.status, 0, m.stderr);
    assert.equal(m.stdout.trim(), expected);
  });
});
