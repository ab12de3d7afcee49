// The split backend (one matrix's products over several GEMM worker threads, by row
// blocks) gives the products of a single backend: ragged row blocks, several held matrices
// at once, disposal, and LoftQ on it within the reference's bar on a fixture.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { createBackend } from '../../server/src/linalg/backend';
import { createSplitBackend } from '../../server/src/linalg/splitBackend';
import { gaussian } from '../../server/src/linalg/dense';
import { loftqMatrix } from '../../server/src/loftq/loftq';
import { loadReference, referenceCases } from '../helpers';

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
