// `loftq analyze` and `loftq plan CKPT` with quantize's calibration options, end to end on the CLI:
// the plan is in output error, the new plan file records the calibration, and `loftq quantize
// --plan` with that file writes exactly the output errors the plan was chosen from (the analysis'
// runs, exact runs at the picked ranks included, are the quantize run's computation).

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import type { Report } from '../../server/src/protocol/lsp_ext';
import { parsePlan } from '../../server/src/plan/planfile';
import { repoRoot, tempDir } from '../helpers';

const CLI = path.join(repoRoot, 'dist', 'cli.js');
const STORIES = path.join(repoRoot, 'examples', 'stories260k');

function loftq(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('loftq analyze --calib-generate: output errors and gains, said on stdout', () => {
  const report = path.join(tempDir(), 'analysis.json');
  const r = loftq(
    'analyze',
    STORIES,
    ...['--bits', '2', '--rank', '4', '--iters', '1', '--calib-generate', '2,32', '--backend', 'wasm'],
    ...['--report', report],
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^2-bit: mean LoftQ relative error [\d.]+, output error [\d.]+ \(QLoRA [\d.]+\) over 35/m);
  assert.match(r.stdout, /output gains: each matrix quantized alone at 2 bits on 64 calibration tokens/);
  const a: Report = JSON.parse(fs.readFileSync(report, 'utf8'));
  assert.deepEqual(a.outputSensitivity, { bits: 2, sequences: 2, tokens: 64 });
  assert.ok(a.analyses![0].matrices.every((m) => m.outputGain! > 0 && m.outputSpectrum!.length >= 4));
});

test('loftq plan CKPT --calib-generate: a plan in output error that a calibrated quantize reproduces', () => {
  const dir = tempDir();
  const planFile = path.join(dir, 'loftq.json');
  const reportFile = path.join(dir, 'analysis.json');
  // bytes count the adapters: smaller ranks get picked, so exact calibrated runs are added
  const p = loftq(
    'plan',
    STORIES,
    ...['--budget', '300000B', '--bits', '2,4', '--ranks', '4,8', '--iters', '1', '--calib-generate', '2,32'],
    ...['--backend', 'wasm', '--out', planFile, '--report', reportFile, '--json'],
  );
  assert.equal(p.status, 0, p.stderr);
  assert.equal(JSON.parse(p.stdout).errorMeasure, 'output');
  const plan = parsePlan(fs.readFileSync(planFile, 'utf8')).plan;
  assert.deepEqual(plan.calibration, { generate: { sequences: 2, length: 32 } });
  const analysis: Report = JSON.parse(fs.readFileSync(reportFile, 'utf8'));
  assert.ok(
    analysis.analyses!.some((a) => a.rank === 4),
    'exact runs at a picked smaller rank',
  );

  const out = path.join(dir, 'out');
  const q = loftq('quantize', '--plan', planFile, '--out', out, '--backend', 'wasm', '--json');
  assert.equal(q.status, 0, q.stderr);
  const report: Report = JSON.parse(q.stdout);
  assert.deepEqual(report.calibration, analysis.calibration);
  for (const m of report.matrices) {
    const row = analysis
      .analyses!.find((a) => a.bits === m.bits && a.rank === m.rank)!
      .matrices.find((x) => x.name === m.name)!;
    assert.equal(m.outputRelError, row.outputRelError, `${m.name} ${m.bits}-bit r${m.rank}`);
  }

  // the calibration options belong to a checkpoint's analysis, not to a report's
  const bad = loftq('plan', reportFile, '--budget', '2.5', '--calib-generate', '2,32');
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /option '--calib-generate' applies to a checkpoint, not to a report/);
});
