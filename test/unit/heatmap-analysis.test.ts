// The heatmap's reading of real reports: an analysis report shown one width at a time (the
// client's mapping agrees with the engine's own `matrices` at the first width), cells whose
// adapter rank reaches min(out, in) explained as exact (measured: their error is 0), and the
// iteration chart marking the iteration whose factors the files hold.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { analyzeCheckpoint, quantizeCheckpoint } from '../../server/src/engine/run';
import { analysedWidths, matricesAtWidth } from '../../client/src/heatmap/analysisWidths';
import { capturesResidual, exactLegend, exactNote } from '../../webviews/src/exact';
import { keptIndex } from '../../webviews/src/keptIteration';
import { repoRoot, tempDir, removeTree } from '../helpers';

const STORIES = path.join(repoRoot, 'examples', 'stories260k');

test('an analysis at 2/3/4 bits: one heatmap per width; rank ≥ min(out, in) cells are exact', async () => {
  // Rank 48: the 64×64 attention matrices' adapters stay below full rank, k/v (32 × 64) reach it.
  const report = await analyzeCheckpoint(STORIES, {
    bits: [4, 2, 3],
    rank: 48,
    iters: 1,
    quantizer: 'nf',
    blockSize: 64,
    spectrum: 8,
    workers: 1,
  });
  assert.deepEqual(analysedWidths(report), [2, 3, 4]);
  // The first analysed width is what the engine lists in `matrices`: the client's mapping agrees.
  const first = report.analyses![0].bits;
  const pick = (m: (typeof report.matrices)[number]) => ({
    name: m.name,
    shape: m.shape,
    dtype: m.dtype,
    bits: m.bits,
    rank: m.rank,
    iters: m.iters,
    quantizer: m.quantizer,
    blockSize: m.blockSize,
    relError: m.relError,
    relErrorPerIter: m.relErrorPerIter,
    qloraRelError: m.qloraRelError,
    frobeniusNorm: m.frobeniusNorm,
  });
  assert.deepEqual(matricesAtWidth(report, first).map(pick), report.matrices.map(pick));
  const at = Object.fromEntries([2, 3, 4].map((b) => [b, matricesAtWidth(report, b)]));
  let exact = 0;
  for (let i = 0; i < at[2].length; i++) {
    const [m2, m3, m4] = [at[2][i], at[3][i], at[4][i]];
    assert.deepEqual([m2.bits, m3.bits, m4.bits], [2, 3, 4]);
    // Plain quantization: more bits, less error, whatever the rank.
    assert.ok(m4.qloraRelError < m3.qloraRelError && m3.qloraRelError < m2.qloraRelError, m2.name);
    // A full-rank adapter holds the whole residual: the measured error vanishes exactly there.
    if (capturesResidual(m2)) {
      exact++;
      for (const m of [m2, m3, m4]) assert.ok(m.relError < 1e-4, `${m.name} at ${m.bits} bits: ${m.relError}`);
      assert.match(exactNote(m2)!, /^rank 32 ≥ min\(out, in\) = 32: the adapter holds the whole residual/);
    } else {
      assert.equal(exactNote(m2), undefined);
      for (const m of [m2, m3, m4]) assert.ok(m.relError > 1e-3, `${m.name} at ${m.bits} bits: ${m.relError}`);
    }
  }
  assert.ok(exact > 0 && exact < at[2].length, `${exact} exact cells`);
  assert.match(exactLegend(at[2])!, new RegExp(`^${exact} matrices have rank ≥ min\\(out, in\\)`));
  assert.equal(matricesAtWidth(report, 8), report.matrices, 'a width not analysed: the report as it is');
});

test('the iteration chart marks the iteration the written files hold', async () => {
  const out = tempDir();
  try {
    const settings = { bits: 2, rank: 4, iters: 5, quantizer: 'nf' as const, blockSize: 64 };
    const { report } = await quantizeCheckpoint(STORIES, { out, settings, workers: 1 });
    let lowerEarlier = 0;
    for (const m of report.matrices) {
      const n = m.relErrorPerIter.length;
      assert.equal(n, 5);
      // Uncalibrated: no bestIter, and the written error (F32 checkpoint: no cast) is the last iteration's.
      assert.equal(m.bestIter, undefined);
      const k = keptIndex(n, m.bestIter);
      assert.ok(Math.abs(m.relErrorPerIter[k] - m.relError) <= 1e-6 * m.relError, `${m.name}`);
      if (Math.min(...m.relErrorPerIter) < m.relErrorPerIter[k]) lowerEarlier++;
    }
    // Where marking the lowest point would mark an iteration the files do not hold.
    assert.ok(lowerEarlier > 0, 'some matrix had a lower error before its last iteration');
    // A report's bestIter (calibrated runs) wins; out of range, the last.
    assert.equal(keptIndex(5, 3), 2);
    assert.equal(keptIndex(5, 9), 4);
  } finally {
    removeTree(out);
  }
});
