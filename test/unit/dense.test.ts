import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { symmetricEigen, gaussian, transpose } from '../../server/src/linalg/dense';
import { orthonormalizeColumns, gramColumns, toColumns, toRowMajor } from '../../server/src/linalg/columns';

test('symmetricEigen: A·v = λ·v, orthonormal vectors, descending values, trace preserved', () => {
  for (const n of [1, 2, 5, 17, 64]) {
    const g = gaussian(n * n, n);
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = g[i * n + j] + g[j * n + i];
    const { values, vectors } = symmetricEigen(a, n);
    let trace = 0, sum = 0;
    for (let i = 0; i < n; i++) { trace += a[i * n + i]; sum += values[i]; }
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

test('orthonormalizeColumns: QᵀQ = I, orthogonal to the basis; dependent columns become zero', () => {
  const m = 50, k = 6;
  const basis = toColumns(gaussian(m * 2, 9), m, 2);
  orthonormalizeColumns(basis);
  const cols = toColumns(gaussian(m * k, 3), m, k);
  for (let i = 0; i < m; i++) cols[5][i] = cols[0][i] * 2 - cols[1][i] + 0.5 * basis[1][i]; // dependent (exactly, in float64)
  orthonormalizeColumns(cols, basis);
  const g = gramColumns([...basis, ...cols]);
  const n = k + 2;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    const want = i === j && i !== 7 ? 1 : 0;
    assert.ok(Math.abs(g[i * n + j] - want) < 1e-9, `g[${i},${j}]=${g[i * n + j]}`);
  }
  assert.deepEqual(toColumns(toRowMajor(cols, m), m, k).map((c) => Array.from(c, Math.fround)), cols.map((c) => Array.from(c, Math.fround)));
});

test('transpose', () => {
  const a = Float32Array.from({ length: 6 * 130 }, (_, i) => i);
  const t = transpose(a, 6, 130);
  for (let i = 0; i < 6; i++) for (let j = 0; j < 130; j++) assert.equal(t[j * 6 + i], a[i * 130 + j]);
});
