// The planner's output-error shortcut (plan/planner/table.ts) against real calibrated LoftQ runs on
// stories260K (layers 0–1, 14 matrices, synthetic anisotropic statistics G, ridge 0.01):
//   - at the analysed rank R the predicted output error is the measured one: the analysis row's
//     ‖(W − Q − B·A)·S‖² equals a calibrated quantize's, and both equal tr(E·H·Eᵀ) computed here in
//     float64 from the files on disk;
//   - with one iteration Q does not depend on the rank, so a run at r < R is the rank-R run's
//     factorisation truncated: the shortcut (outputRelError·‖W·S‖)² + Σ_{r<i≤R} σ_i², σ the spectrum
//     of (W − Q)·S, equals the rank-r run's error up to float32 sums;
//   - with T = 2 the rank-r run re-fits Q, and the shortcut is an estimate: it runs high, within the
//     bound measured here (docs/planner.md).
// And the tables: output measure with gains (KL per unit output error), or weight error without them.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { analyzeCheckpoint, quantizeCheckpoint } from '../../server/src/engine/run';
import { gaussian } from '../../server/src/linalg/dense';
import type { InputStat, InputStats } from '../../server/src/model/stats';
import type { PreparedCalibration } from '../../server/src/engine/api';
import type { AnalysisEntry, Report } from '../../server/src/protocol/lsp_ext';
import { predictError, tablesFromReport } from '../../server/src/plan/planner/table';
import { readReport } from '../../server/src/plan/planner/report';
import { InputError } from '../../server/src/base/errors';
import * as fs from 'node:fs';
import { planReport } from '../../server/src/plan/planner/plan';
import type { CostModel } from '../../server/src/plan/planner/cost';
import { repoRoot, tempDir } from '../helpers';
import { outputErrorOnDisk } from '../outputErrorOnDisk';

const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const TARGETS = ['model.layers.{0..1}.**'];
const RIDGE = 0.01;
const R = 16;
const BACKEND = 'wasm' as const;

/** G = XᵀX/N of correlated inputs whose scales span two decades. */
function stat(dim: number, tokens: number, seed: number): InputStat {
  const z = gaussian(tokens * dim, seed),
    c = gaussian(dim * dim, seed + 1);
  const g = new Float64Array(dim * dim);
  const x = new Float64Array(dim);
  for (let t = 0; t < tokens; t++) {
    for (let j = 0; j < dim; j++) {
      let v = 0;
      for (let p = 0; p < dim; p++) v += z[t * dim + p] * c[p * dim + j];
      x[j] = (v * 10 ** (-1 + (2 * j) / dim)) / Math.sqrt(dim);
    }
    for (let i = 0; i < dim; i++) for (let j = 0; j < dim; j++) g[i * dim + j] += (x[i] * x[j]) / tokens;
  }
  return { kind: 'full', dim, count: tokens, g };
}

function statistics(): InputStats {
  const stats: InputStats = new Map();
  for (const l of [0, 1]) {
    const p = `model.layers.${l}`;
    const attn = stat(64, 200, 100 + l);
    for (const m of ['q_proj', 'k_proj', 'v_proj']) stats.set(`${p}.self_attn.${m}.weight`, attn);
    stats.set(`${p}.self_attn.o_proj.weight`, stat(64, 200, 200 + l));
    const mlp = stat(64, 200, 300 + l);
    for (const m of ['gate_proj', 'up_proj']) stats.set(`${p}.mlp.${m}.weight`, mlp);
    stats.set(`${p}.mlp.down_proj.weight`, stat(172, 300, 400 + l));
  }
  return stats;
}

const STATS = statistics();
const prepared: PreparedCalibration = {
  stats: STATS,
  info: { source: 'tokens', file: 'synthetic.json', sequences: 2, tokens: 200, fullStatMaxDim: 8192, ridge: RIDGE },
};

/** Analysis runs at R (with the spectrum) and at the smaller ranks, 2 and 4 bits, T iterations. */
function analyse(iters: number, ranks: number[]): Promise<Report> {
  return analyzeCheckpoint(STORIES, {
    bits: [2, 4],
    rank: R,
    runs: [R, ...ranks].map((rank) => ({ bits: [2, 4], rank })),
    iters,
    quantizer: 'nf',
    blockSize: 64,
    spectrum: R,
    targets: TARGETS,
    backend: BACKEND,
    workers: 2,
    calibration: prepared,
  });
}

const rowsAt = (r: Report, bits: number, rank: number) =>
  new Map(r.analyses!.find((a) => a.bits === bits && a.rank === rank)!.matrices.map((m) => [m.name, m]));
const outputSq = (m: AnalysisEntry['matrices'][number]) => (m.outputRelError! * m.outputNorm!) ** 2;

test('output error at the analysed rank: the analysis row, a calibrated quantize and the files agree', async () => {
  const report = await analyse(2, []);
  const out = path.join(tempDir(), 'out');
  const settings = { bits: 2, rank: R, iters: 2, quantizer: 'nf' as const, blockSize: 64 };
  const q = await quantizeCheckpoint(STORIES, {
    out,
    settings,
    targets: TARGETS,
    backend: BACKEND,
    workers: 2,
    calibration: prepared,
  });
  const rows = rowsAt(report, 2, R);
  assert.equal(q.report.matrices.length, 14);
  for (const m of q.report.matrices) {
    const row = rows.get(m.name)!;
    // the same deterministic computation: the same figure to the last bit
    assert.equal(row.outputRelError, m.outputRelError, m.name);
    assert.equal(row.bestIter, m.bestIter, m.name);
    const predicted = predictError(row, R, R, 'output')!;
    const onDisk = (
      await outputErrorOnDisk(path.join(STORIES, 'model.safetensors'), out, m.name, STATS.get(m.name)!, RIDGE)
    ).error;
    // float32 sums (tr(E·H·Eᵀ) in the kernels) against float64 here
    assert.ok(Math.abs(predicted / onDisk - 1) < 1e-4, `${m.name}: predicted ${predicted}, on disk ${onDisk}`);
  }
});

test('T = 1: truncating the rank-R factorisation in the metric is the rank-r calibrated run', async () => {
  const report = await analyse(1, [4, 8]);
  let worst = 0;
  for (const bits of [2, 4])
    for (const r of [4, 8]) {
      const atR = rowsAt(report, bits, R),
        atr = rowsAt(report, bits, r);
      for (const [name, row] of atR) {
        assert.equal(row.outputSpectrum!.length, R, name);
        const predicted = predictError(row, R, r, 'output')!;
        const actual = outputSq(atr.get(name)!);
        worst = Math.max(worst, Math.abs(predicted / actual - 1));
      }
    }
  // 64- and 172-wide matrices: the Krylov space spans the matrix, both SVDs are exact; what is left
  // is float32 rounding of the factors and the H-products (measured 8.5e-8 on 2026-12-07).
  console.log(`T = 1: worst |predicted/actual − 1| = ${worst.toExponential(2)}`);
  assert.ok(worst < 1e-5, `worst |predicted/actual − 1| = ${worst}`);
});

test('T = 2: the shortcut runs high against rank-r runs that re-fit Q, by less than 50% per matrix', async () => {
  const report = await analyse(2, [4, 8]);
  const ratios: number[] = [];
  for (const bits of [2, 4])
    for (const r of [4, 8]) {
      const atR = rowsAt(report, bits, R),
        atr = rowsAt(report, bits, r);
      let predicted = 0,
        actual = 0;
      for (const [name, row] of atR) {
        const p = predictError(row, R, r, 'output')!,
          a = outputSq(atr.get(name)!);
        ratios.push(p / a);
        predicted += p;
        actual += a;
      }
      console.log(`${bits}-bit, ${R} → ${r}: predicted / actual output error ${(predicted / actual).toFixed(3)}`);
      assert.ok(predicted >= actual, `${bits}-bit r${r}: the total runs high`);
    }
  // A rank-r run quantizes into Q what the rank-R adapter carried, so the truncated rank-R run is
  // worse than a real rank-r run on every matrix (measured 1.106 … 1.411 on 2026-12-07; the weight
  // shortcut's worst matrix was +36%, docs/planner.md). The bound leaves room for rounding and the
  // kept-iterate choice, not for a shortcut that errs low.
  const lo = Math.min(...ratios),
    hi = Math.max(...ratios);
  console.log(`per matrix: ${lo.toFixed(3)} … ${hi.toFixed(3)}`);
  assert.ok(lo > 1 && hi < 1.5, `per-matrix predicted/actual in ${lo} … ${hi}`);
});

const COST: CostModel = { blockSize: 64, scales: 'dq', adapterBytes: 4, countAdapters: false };
const row = (name: string, extra: Partial<AnalysisEntry['matrices'][number]>) => ({
  name,
  shape: [8, 8] as [number, number],
  relError: 0.1,
  qloraRelError: 0.2,
  frobeniusNorm: 10,
  residualSpectrum: [3, 2, 1, 0.5],
  ...extra,
});
const entry = (bits: number, rows: AnalysisEntry['matrices']): AnalysisEntry => ({
  bits,
  rank: 4,
  iters: 1,
  quantizer: 'nf',
  blockSize: 64,
  matrices: rows,
});
const reportOf = (analyses: AnalysisEntry[]) => ({ analyses }) as unknown as Report;

test('tables: output error times the gain when every matrix has one; weight error otherwise', () => {
  const out = { outputRelError: 0.05, outputNorm: 20, outputSpectrum: [4, 3, 2, 1] };
  const full = reportOf([entry(2, [row('a', { ...out, outputGain: 0.5 }), row('b', { ...out, outputGain: 2 })])]);
  const t = tablesFromReport(full, { ranks: [4, 2], cost: COST });
  assert.equal(t.measure, 'output');
  assert.deepEqual(t.warnings, []);
  const err = (tables: typeof t.tables, name: string, rank: number) =>
    tables.find((x) => x.name === name)!.choices.find((c) => c.rank === rank)!.error;
  // (0.05·20)² = 1 at rank 4; + 2² + 1² truncated to rank 2; times each matrix's gain
  assert.equal(err(t.tables, 'a', 4), 0.5);
  assert.equal(err(t.tables, 'b', 2), 2 * (1 + 4 + 1));
  // relative: ‖(W − Q − A·Bᵀ)·S‖² / ‖W·S‖², no gain
  const rel = tablesFromReport(full, { ranks: [4], cost: COST, objective: 'relative' });
  assert.equal(err(rel.tables, 'b', 4), 1 / 400);
  // weight error asked for: the weight table as before
  const w = tablesFromReport(full, { ranks: [4, 2], cost: COST, measure: 'weight' });
  assert.equal(err(w.tables, 'a', 2), 1 + 1 + 0.25);

  // output errors but no gains (an imatrix): weight error, and the plan says so
  const noGain = reportOf([entry(2, [row('a', out), row('b', out)])]);
  const ng = tablesFromReport(noGain, { ranks: [4], cost: COST });
  assert.equal(ng.measure, 'weight');
  assert.match(ng.warnings.join('\n'), /2 matrices lack an output gain .*planned in weight error/);
  assert.equal(err(ng.tables, 'a', 4), 1);
  // no output errors at all: weight, silently
  const plain = tablesFromReport(reportOf([entry(2, [row('a', {}), row('b', {})])]), { ranks: [4], cost: COST });
  assert.equal(plain.measure, 'weight');
  assert.deepEqual(plain.warnings, []);

  const plan = planReport(full, { budget: { avgBits: 8 }, ranks: [4], cost: COST });
  assert.equal(plan.errorMeasure, 'output');
  assert.equal(plan.plan.error, 0.5 + 2);
});

test('a report whose output figures are not numbers ≥ 0 is refused in one line naming the file and field', () => {
  const out = { outputRelError: 0.05, outputNorm: 20, outputSpectrum: [4, 3, 2, 1], outputGain: 1 };
  const file = path.join(tempDir(), 'analysis.json');
  const write = (extra: object) =>
    fs.writeFileSync(file, JSON.stringify({ version: 1, analyses: [entry(2, [row('a', { ...out, ...extra })])] }));
  write({});
  assert.equal(readReport(file).analyses![0].matrices[0].outputGain, 1);
  for (const [extra, field] of [
    [{ outputGain: -1 }, 'outputGain'],
    [{ outputNorm: 'big' }, 'outputNorm'],
    [{ outputRelError: null }, 'outputRelError'],
    [{ outputSpectrum: [1, 'x'] }, 'outputSpectrum'],
  ] as const) {
    write(extra);
    assert.throws(
      () => readReport(file),
      (e: Error) =>
        e instanceof InputError && e.message.includes(file) && e.message.includes(`matrices[0].${field} must be`),
      field,
    );
  }
  // the tables, reading a report that did not pass readReport, take a negative gain as none
  const t = tablesFromReport(reportOf([entry(2, [row('a', { ...out, outputGain: -1 })])]), { ranks: [4], cost: COST });
  assert.equal(t.measure, 'weight');
});
