// The planner in output terms, measured where it matters: the model's KL on held-out tokens.
// stories260K, bits 2/3/4 at rank 16, T 2, backbone budgets of 2.5 and 3.0 bits per weight
// (avgBits: codes + dq scales, adapters not counted, so rank is free and every plan is rank 16):
//   - output plan: a calibrated analysis (16×128 tokens sampled with seed 0) → the planner in
//     output terms (each matrix's calibrated output error times its measured output gain);
//   - weight plan: a plain analysis → the planner in weight error, as before calibration existed;
//   - first-k: the LoftQ paper's rule (first k layers at 4 bits, the rest at 2) at the same budget.
// Each plan is quantized with the same calibration (the same statistics: only the plan differs)
// and `loftq eval`'s engine measures KL(original ‖ init) on 16 other sampled sequences (seed 1).
// docs/planner.md ("Output terms") has the figures and the command lines.

import { before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { quantizeCheckpoint } from '../../server/src/engine/run';
import { analyzeForPlan } from '../../server/src/engine/planAnalyze';
import { openCheckpoint } from '../../server/src/checkpoint';
import { createBackend } from '../../server/src/linalg/backend';
import { registerCalibrationCollector } from '../../server/src/model/calibrate';
import { collectInputStats } from '../../server/src/model/collect';
import { readModelConfig } from '../../server/src/model/config';
import { generateSequences } from '../../server/src/model/generate';
import { runEval } from '../../server/src/model/evalRun';
import type { CostModel } from '../../server/src/plan/planner/cost';
import { planReport } from '../../server/src/plan/planner/plan';
import { applyPlanToText } from '../../server/src/plan/planner/planedit';
import { parsePlan } from '../../server/src/plan/planfile';
import type { PlanChoice, Report } from '../../server/src/protocol/lsp_ext';
import type { PreparedCalibration } from '../../server/src/engine/api';
import { repoRoot, tempDir } from '../helpers';

const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const BACKBONE: CostModel = { blockSize: 64, scales: 'dq', adapterBytes: 4, countAdapters: false };
const ITERS = 2;
const BACKEND = 'wasm' as const;
const ANALYSIS = {
  bits: [2, 3, 4],
  ranks: [16],
  iters: ITERS,
  quantizer: 'nf' as const,
  blockSize: 64,
  workers: 2,
  backend: BACKEND,
};
const CALIBRATION = { generate: { sequences: 16, length: 128, seed: 0 } };
const HELD_OUT = { sequences: 16, length: 128, seed: 1 };

let calibrated: Report, plain: Report, prepared: PreparedCalibration, tokensFile: string;

before(async () => {
  registerCalibrationCollector();
  calibrated = await analyzeForPlan(STORIES, { ...ANALYSIS, calibration: CALIBRATION });
  plain = await analyzeForPlan(STORIES, ANALYSIS);
  // The quantize runs share one set of statistics: the same tokens the analysis sampled (seed 0),
  // collected once here (float32 products, as on wasm) instead of once per run.
  const backend = await createBackend('wasm');
  const ck = await openCheckpoint(STORIES);
  const c = await readModelConfig(STORIES);
  const gen = CALIBRATION.generate;
  const tokens = await generateSequences(ck, c, { ...gen, backend });
  prepared = { stats: await collectInputStats(ck, tokens, { backend, config: c }), info: calibrated.calibration! };
  const held = await generateSequences(ck, c, { ...HELD_OUT, backend });
  tokensFile = path.join(tempDir(), 'held-out.json');
  fs.writeFileSync(tokensFile, JSON.stringify(held));
});

/** Held-out KL of the calibrated init quantized with `choices`. */
async function heldOutKl(choices: PlanChoice[], budget: number): Promise<number> {
  const text = applyPlanToText('{ "checkpoint": "." }\n', choices, { avgBits: budget });
  const out = path.join(tempDir(), 'out');
  const settings = { bits: 2, rank: 16, iters: ITERS, quantizer: 'nf' as const, blockSize: 64 };
  const { report } = await quantizeCheckpoint(STORIES, {
    out,
    settings,
    plan: parsePlan(text).plan,
    workers: 2,
    backend: BACKEND,
    calibration: prepared,
  });
  assert.deepEqual(
    report.matrices.map((m) => m.bits),
    choices.map((c) => c.bits),
  );
  const { result } = await runEval(STORIES, out, {
    tokensFile,
    backend: await createBackend('wasm'),
    updateReport: false,
  });
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
  return result.loftq.kl;
}

test('a calibrated analysis carries output errors and gains; the planner then works in output error', () => {
  assert.deepEqual(calibrated.outputSensitivity, { bits: 4, sequences: 4, tokens: 512 });
  for (const a of calibrated.analyses!)
    for (const m of a.matrices) {
      assert.ok(m.outputRelError! > 0 && m.outputRelError! < m.qloraOutputRelError!, m.name);
      assert.ok(m.outputGain! > 0 && m.outputNorm! > 0, m.name);
    }
  const opts = { budget: { avgBits: 2.5 }, ranks: [16], cost: BACKBONE };
  assert.equal(planReport(calibrated, opts).errorMeasure, 'output');
  assert.equal(planReport(plain, opts).errorMeasure, 'weight');
});

const title = (budget: number) =>
  `stories260K at ${budget} bits: the output-terms plan has a lower held-out KL than the weight plan and first-k`;
for (const budget of [2.5, 3.0])
  test(title(budget), async () => {
    const opts = { budget: { avgBits: budget }, ranks: [16], cost: BACKBONE };
    const output = planReport(calibrated, opts);
    const weight = planReport(plain, opts);
    assert.ok(output.plan.avgBits <= budget && weight.plan.avgBits <= budget);
    // first-k at the same budget, scored by the planner in output terms like the plan
    const k = output.baselines.firstK.k;
    assert.ok(Number.isInteger(k), 'first-k fits');
    const firstK = output.choices.map((c) => {
      const layer = Number(/layers\.(\d+)\./.exec(c.name)![1]);
      return { ...c, bits: layer < k ? 4 : 2 };
    });
    const kl = {
      output: await heldOutKl(output.choices, budget),
      weight: await heldOutKl(weight.choices, budget),
      firstK: await heldOutKl(firstK, budget),
    };
    console.log(
      `${budget} bits: held-out KL output plan ${kl.output.toFixed(4)} (${output.plan.avgBits.toFixed(3)} bits), ` +
        `weight plan ${kl.weight.toFixed(4)} (${weight.plan.avgBits.toFixed(3)} bits), first-k k=${k} ` +
        `${kl.firstK.toFixed(4)} (${output.baselines.firstK.avgBits.toFixed(3)} bits)`,
    );
    assert.ok(kl.output < kl.weight, `output plan KL ${kl.output} ≥ weight plan KL ${kl.weight}`);
    assert.ok(kl.output < kl.firstK, `output plan KL ${kl.output} ≥ first-k KL ${kl.firstK}`);
  });
