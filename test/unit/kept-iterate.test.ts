// Calibrated LoftQ keeps an earlier iterate's codes only and decodes its values at the end
// (grid.dequantize): the decoded values must be the quantizer's own, bit for bit, on every grid;
// and the kept iterate must be exactly the Q that a run stopping at that iteration ends with.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { calibratedLoftqMatrix } from '../../server/src/loftq/calibrated';
import { calibrationMetric } from '../../server/src/loftq/calibrationMetric';
import { createBackend } from '../../server/src/linalg/backend';
import { gaussian } from '../../server/src/linalg/dense';
import { matrixGrid } from '../../server/src/quant/grid';
import { withWorkspace } from '../../server/src/kernels/kernels';
import type { MatrixSettings } from '../../server/src/protocol/lsp_ext';

const GRIDS: { s: Pick<MatrixSettings, 'quantizer' | 'bits' | 'blockSize'>; dtype: string }[] = [
  { s: { quantizer: 'nf', bits: 2, blockSize: 64 }, dtype: 'BF16' },
  { s: { quantizer: 'nf', bits: 4, blockSize: 32 }, dtype: 'F32' },
  { s: { quantizer: 'uniform', bits: 3, blockSize: 64 }, dtype: 'F32' },
  { s: { quantizer: 'hqq', bits: 2, blockSize: 64 }, dtype: 'BF16' },
  { s: { quantizer: 'hqq', bits: 3, blockSize: 64 }, dtype: 'F16' },
  { s: { quantizer: 'hqq', bits: 4, blockSize: 128 }, dtype: 'F32' },
];

/** Heavy-tailed values with an outlier per few blocks and a block of zeros (scale 0). */
function awkward(n: number, seed: number): Float32Array {
  const g = gaussian(n, seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = g[i] ** 3 * 0.01 + (i % 97 === 0 ? 0.3 : 0);
  x.fill(0, 128, 256);
  return x;
}

test('grid.dequantize gives back the values quantize wrote, bit for bit, on every grid', () => {
  const n = 64 * 48;
  for (const { s, dtype } of GRIDS) {
    const grid = matrixGrid(s, dtype);
    const name = `${s.quantizer}${s.bits} block ${s.blockSize} ${dtype}`;
    withWorkspace((ws) => {
      const x = ws.f32(n, awkward(n, s.bits * 7 + s.blockSize));
      const out = grid.regions(ws, n);
      grid.quantize(ws, x, out);
      const values = out.values.view().slice();
      out.values.view().fill(Number.NaN);
      grid.dequantize(ws, out);
      const got = out.values.view();
      const bits = (v: Float32Array) => new Uint32Array(v.buffer, v.byteOffset, v.length);
      assert.deepEqual(bits(got), bits(values), name);
    });
  }
});

test('an earlier kept iterate is the Q a run stopping there ends with', async () => {
  const backend = await createBackend('wasm');
  const rows = 48,
    cols = 64;
  // Unevenly scaled, correlated inputs make the weight-space quantizer step raise the output
  // error at some iterations: search seeds for runs that keep an earlier iterate.
  let checked = 0;
  for (let seed = 1; seed <= 40 && checked < 3; seed++) {
    const z = gaussian(cols * cols, seed);
    const g = new Float64Array(cols * cols);
    for (let i = 0; i < cols; i++)
      for (let j = 0; j < cols; j++) {
        let v = 0;
        for (let p = 0; p < cols; p++) v += z[i * cols + p] * z[j * cols + p] * 10 ** ((3 * p) / cols);
        g[i * cols + j] = v / cols;
      }
    const metric = calibrationMetric({ kind: 'full', dim: cols, count: 1000, g }, 1e-4);
    const w = Float32Array.from(gaussian(rows * cols, 100 + seed), (v) => 0.02 * v);
    const s: MatrixSettings = { quantizer: 'nf', bits: 2, rank: 4, iters: 6, blockSize: 64 };
    const full = await calibratedLoftqMatrix(w, rows, cols, s, backend, metric);
    if (full.bestIter === s.iters) continue;
    const stopped = await calibratedLoftqMatrix(w, rows, cols, { ...s, iters: full.bestIter }, backend, metric);
    const at = `seed ${seed}, kept iterate ${full.bestIter} of ${s.iters}`;
    assert.deepEqual(full.codes, stopped.codes, `${at}: codes`);
    assert.deepEqual(full.scales, stopped.scales, `${at}: scales`);
    assert.deepEqual(full.q, stopped.q, `${at}: values`);
    assert.equal(full.outputRelErrorPerIter[full.bestIter - 1], Math.min(...full.outputRelErrorPerIter), at);
    checked++;
  }
  assert.ok(checked > 0, 'no seed kept an earlier iterate: the test checks nothing');
});
