import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { symmetricEigen, orthonormalize, gram, gaussian, transpose } from '../../server/src/linalg/dense';

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

test('orthonormalize: QᵀQ = I; dependent columns become zero', () => {
  const m = 50, k = 6;
  const a = Float64Array.from(gaussian(m * k, 3));
  for (let i = 0; i < m; i++) a[i * k + 5] = a[i * k + 0] * 2 - a[i * k + 1]; // dependent (exactly, in float64)
  const q = orthonormalize(a, m, k);
  const g = gram(q, m, k);
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) {
    const want = i === j && i !== 5 ? 1 : 0;
    assert.ok(Math.abs(g[i * k + j] - want) < 1e-9, `g[${i},${j}]=${g[i * k + j]}`);
  }
});

test('transpose', () => {
  const a = Float32Array.from({ length: 6 * 130 }, (_, i) => i);
  const t = transpose(a, 6, 130);
  for (let i = 0; i < 6; i++) for (let j = 0; j < 130; j++) assert.equal(t[j * 6 + i], a[i * 130 + j]);
});
