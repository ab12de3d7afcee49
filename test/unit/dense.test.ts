import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { symmetricEigen, gaussian, transpose } from '../../server/src/linalg/dense';
import { ColumnBlock } from '../../server/src/linalg/columns';
import { withWorkspace } from '../../server/src/kernels/kernels';

test('symmetricEigen: A·v = λ·v, orthonormal vectors, descending values, trace preserved', () => {
  for (const n of [1, 2, 5, 17, 64]) {
    const g = gaussian(n * n, n);
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = g[i * n + j] + g[j * n + i];
    const { values, vectors } = symmetricEigen(a, n);
    let trace = 0,
      sum = 0;
    for (let i = 0; i < n; i++) {
      trace += a[i * n + i];
      sum += values[i];
    }
    assert.ok(Math.abs(trace - sum) < 1e-9 * n, `trace n=${n}`);
    for (let j = 0; j < n; j++) {
      if (j > 0) assert.ok(values[j] <= values[j - 1]);
      for (let i = 0; i < n; i++) {
        let av = 0;
        for (let p = 0; p < n; p++) av += a[i * n + p] * vectors[p * n + j];
        assert.ok(Math.abs(av - values[j] * vectors[i * n + j]) < 1e-9 * n, `residual n=${n}`);
      }
      for (let q = 0; q < n; q++) {
        let dot = 0;
        for (let i = 0; i < n; i++) dot += vectors[i * n + j] * vectors[i * n + q];
        assert.ok(Math.abs(dot - (j === q ? 1 : 0)) < 1e-10);
      }
    }
  }
});

test('symmetricEigen of a diagonal matrix with repeated values', () => {
  const a = Float64Array.from([3, 0, 0, 0, 1, 0, 0, 0, 3]);
  const { values } = symmetricEigen(a, 3);
  assert.deepEqual(Array.from(values), [3, 3, 1]);
});

const COLUMN_BLOCK_ORTHONORMAL =
  'ColumnBlock: orthonormalised columns have QᵀQ = I and are orthogonal to the earlier ones; ' +
  'dependent columns become zero';

test(COLUMN_BLOCK_ORTHONORMAL, () => {
  const m = 50,
    k = 6;
  withWorkspace((ws) => {
    const block = new ColumnBlock(ws, m, 2 + k, k);
    block.appendRows(gaussian(m * 2, 9), 2);
    block.orthonormalizeLast(2);
    const rows = gaussian(m * k, 3);
    // Column 5 (block column 7) repeats column 0: exactly dependent, on the new columns and
    // (through column 0's components) on the basis.
    for (let i = 0; i < m; i++) rows[i * k + 5] = rows[i * k];
    block.appendRows(rows, k);
    block.orthonormalizeLast(k);
    const g = block.gram();
    const n = k + 2;
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        const want = i === j && i !== 7 ? 1 : 0;
        assert.ok(Math.abs(g[i * n + j] - want) < 1e-12, `g[${i},${j}]=${g[i * n + j]}`);
      }
    // rowMajor is the float32 transpose of the columns; combine forms C·W column by column.
    const rm = block.rowMajor(2, k);
    for (let i = 0; i < m; i++)
      for (let j = 0; j < k; j++) assert.equal(rm[i * k + j], Math.fround(block.column(2 + j)[i]));
    const w = Float64Array.from({ length: n * 2 }, (_, i) => (i % 3) - 1);
    block.combine(w, 2, [0, 1], (j, v) => {
      for (let i = 0; i < m; i++) {
        let want = 0;
        for (let p = 0; p < n; p++) want += w[p * 2 + j] * block.column(p)[i];
        assert.ok(Math.abs(v[i] - want) < 1e-12, `combine column ${j} [${i}]`);
      }
    });
  });
});

test('transpose', () => {
  const a = Float32Array.from({ length: 6 * 130 }, (_, i) => i);
  const t = transpose(a, 6, 130);
  for (let i = 0; i < 6; i++) for (let j = 0; j < 130; j++) assert.equal(t[j * 6 + i], a[i * 130 + j]);
});

test('ColumnBlock: the tiled block kernels match plain float64 sums on odd lengths and ragged widths', () => {
  // 4×2 tiles with remainders in every direction: odd length, 7 earlier columns, 9 new ones.
  const m = 101,
    first = 7,
    k = 9;
  withWorkspace((ws) => {
    const block = new ColumnBlock(ws, m, first + k, k);
    block.appendRows(gaussian(m * first, 21), first);
    block.orthonormalizeLast(first);
    const raw = gaussian(m * k, 22);
    block.appendRows(raw, k);
    const n = first + k;
    const naiveGram = (cols: Float64Array[]) =>
      cols.map((a) => cols.map((b) => a.reduce((s, x, i) => s + x * b[i], 0)));
    const before = Array.from({ length: n }, (_, j) => Float64Array.from(block.column(j)));
    const g0 = block.gram();
    const want0 = naiveGram(before);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++)
        assert.ok(Math.abs(g0[i * n + j] - want0[i][j]) < 1e-9 * (1 + Math.abs(want0[i][j])), `gram[${i},${j}]`);
    block.orthonormalizeLast(k);
    const g = block.gram();
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++)
        assert.ok(Math.abs(g[i * n + j] - (i === j ? 1 : 0)) < 1e-12, `QᵀQ[${i},${j}]=${g[i * n + j]}`);
    // The new columns span what the raw ones spanned beyond the earlier basis: each raw column
    // is reproduced by its projections on all n orthonormal columns.
    for (let j = 0; j < k; j++) {
      const x = Float64Array.from({ length: m }, (_, i) => raw[i * k + j]);
      const rec = new Float64Array(m);
      for (let p = 0; p < n; p++) {
        const q = block.column(p);
        const d = q.reduce((s, v, i) => s + v * x[i], 0);
        for (let i = 0; i < m; i++) rec[i] += d * q[i];
      }
      for (let i = 0; i < m; i++) assert.ok(Math.abs(rec[i] - x[i]) < 1e-5, `raw column ${j} [${i}]`);
    }
    const js = [0, 3, 4, 8, 15];
    const w = Float64Array.from({ length: n * n }, (_, i) => Math.sin(i));
    const seen: number[] = [];
    block.combine(w, n, js, (j, v) => {
      seen.push(j);
      for (let i = 0; i < m; i++) {
        let want = 0;
        for (let p = 0; p < n; p++) want += w[p * n + j] * block.column(p)[i];
        assert.ok(Math.abs(v[i] - want) < 1e-12, `combine column ${j} [${i}]`);
      }
    });
    assert.deepEqual(seen, js);
  });
});
