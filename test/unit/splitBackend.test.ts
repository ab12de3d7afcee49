// The split backend (one matrix's products over several GEMM worker threads, by row
// blocks) gives the products of a single backend: ragged row blocks, several held matrices
// at once, disposal, and LoftQ on it within the reference's bar on a fixture; its kernel pool
// (element-wise kernels on parts of a shared workspace) gives the results of one call.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { createBackend } from '../../server/src/linalg/backend';
import { createSplitBackend } from '../../server/src/linalg/splitBackend';
import { gaussian } from '../../server/src/linalg/dense';
import { loftqMatrix } from '../../server/src/loftq/loftq';
import { loadReference, referenceCases } from '../helpers';
import { withWorkspace } from '../../server/src/kernels/kernels';
import { inParts } from '../../server/src/kernels/pool';
import { codebook } from '../../server/src/quant/codebook';
import { quantizeRegion, quantizeResidual, quantizedRegions } from '../../server/src/quant/quantize';

test('split backend: products equal plain float64 sums, on ragged row blocks, with two matrices held', async () => {
  const split = await createSplitBackend(3, 'wasm');
  try {
    const [m, n, k] = [37, 29, 5];
    const a = gaussian(m * n, 5),
      at = gaussian(n * m, 6),
      b = gaussian(n * k, 7),
      bt = gaussian(m * k, 8);
    const ha = await split.hold(a, m, n);
    const hat = await split.hold(at, n, m);
    const check = (got: Float32Array, x: Float32Array, y: Float32Array, rows: number, inner: number) => {
      for (let i = 0; i < rows; i++)
        for (let j = 0; j < k; j++) {
          let want = 0;
          for (let p = 0; p < inner; p++) want += x[i * inner + p] * y[p * k + j];
          assert.ok(Math.abs(got[i * k + j] - want) < 1e-4, `[${i},${j}] ${got[i * k + j]} vs ${want}`);
        }
    };
    check(await ha.times(b, k), a, b, m, n);
    check(await hat.times(bt, k), at, bt, n, m);
    assert.equal(split.flops, 2 * m * n * k * 2);
    ha.dispose();
    check(await hat.times(bt, k), at, bt, n, m);
    hat.dispose();
    await assert.rejects(ha.times(b, k), /no matrix/);
  } finally {
    await split.close();
  }
});

test("split backend: LoftQ gives the single backend's errors on a fixture", async () => {
  const c = referenceCases()[0];
  const ref = await loadReference(c);
  const s = {
    bits: c.bits,
    rank: c.rank,
    iters: c.iters,
    quantizer: (c.method === 'normal' ? 'nf' : 'uniform') as 'nf' | 'uniform',
    blockSize: c.block_size,
  };
  const split = await createSplitBackend(2, 'wasm');
  try {
    const a = await loftqMatrix(ref.weight, c.shape[0], c.shape[1], s, split);
    const b = await loftqMatrix(ref.weight, c.shape[0], c.shape[1], s, await createBackend('wasm'));
    for (let t = 0; t < c.iters; t++)
      assert.ok(Math.abs(a.relErrorPerIter[t] - b.relErrorPerIter[t]) <= 1e-5 * b.relErrorPerIter[t], `iteration ${t}`);
    assert.ok(a.relErrorPerIter.at(-1)! / c.rel_err.at(-1)! <= 1.005, 'error ratio vs the reference');
  } finally {
    await split.close();
  }
});

test('kernel pool: kernels split over this thread and two workers give the one-call results', async () => {
  const split = await createSplitBackend(3, 'wasm');
  try {
    assert.equal(split.kernels?.helpers, 2);
    // Sizes that split unevenly: 67 rows (not a multiple of the 4-row tiles or 32-row bands),
    // 45 columns, NF blocks of 64 that straddle rows, a short last block.
    const [rows, cols, r] = [67, 45, 5];
    const size = rows * cols;
    await withWorkspace(async (ws) => {
      const x = ws.f32(size, gaussian(size, 11));
      const table = codebook('nf', 2);
      const one = quantizedRegions(ws, size, 64),
        parts = quantizedRegions(ws, size, 64);
      quantizeRegion(ws, x, table, 'nf', 64, one);
      // Fused with the residual w − Q, in parts: the plain quantizer's codes, scales, values.
      const w = ws.f32(size, gaussian(size, 14));
      const [rOne, rParts] = [ws.f32(size), ws.f32(size)];
      const sumOne = ws.k.difference(w.ptr, one.values.ptr, rOne.ptr, size);
      const sumParts = await quantizeResidual(ws, x, table, 'nf', 64, parts, w, rParts, split.kernels);
      assert.deepEqual(parts.codes.view(), one.codes.view());
      assert.deepEqual(parts.scales.view(), one.scales.view());
      assert.deepEqual(parts.values.view(), one.values.view());
      assert.deepEqual(rParts.view(), rOne.view());
      assert.ok(Math.abs(sumParts - sumOne) <= 1e-12 * sumOne, `${sumParts} vs ${sumOne}`);
      const here = quantizedRegions(ws, size, 64);
      const sumHere = await quantizeResidual(ws, x, table, 'nf', 64, here, w, rParts);
      assert.deepEqual(here.codes.view(), one.codes.view());
      assert.deepEqual(here.values.view(), one.values.view());
      assert.deepEqual(rParts.view(), rOne.view());
      assert.ok(Math.abs(sumHere - sumOne) <= 1e-12 * sumOne, `${sumHere} vs ${sumOne}`);

      const [tOne, tParts] = [ws.f32(size), ws.f32(size)];
      ws.k.transpose(x.ptr, rows, cols, tOne.ptr);
      await inParts(ws, split.kernels, rows, 32, 'transposeBand', (a, b) => [x.ptr, rows, cols, tParts.ptr, a, b]);
      assert.deepEqual(tParts.view(), tOne.view());

      const q = one.values;
      const [B, A] = [ws.f32(rows * r, gaussian(rows * r, 12)), ws.f32(r * cols, gaussian(r * cols, 13))];
      const [gOne, gParts] = [ws.f32(size), ws.f32(size)];
      const packed = [0, 1, 2].map(() => ws.f32(r * cols));
      const want = ws.k.lowRankStep(x.ptr, q.ptr, B.ptr, A.ptr, rows, cols, r, gOne.ptr, packed[0].ptr);
      const got = await inParts(ws, split.kernels, rows, 4, 'lowRankStep', (a, b, p) => [
        x.ptr + 4 * a * cols,
        q.ptr + 4 * a * cols,
        B.ptr + 4 * a * r,
        A.ptr,
        b - a,
        cols,
        r,
        gParts.ptr + 4 * a * cols,
        packed[p].ptr,
      ]);
      assert.ok(Math.abs(got - want) <= 1e-12 * want, `${got} vs ${want}`);
      assert.deepEqual(gParts.view(), gOne.view());
    });
  } finally {
    await split.close();
  }
});
