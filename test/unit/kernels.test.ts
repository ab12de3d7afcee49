// The WebAssembly kernels against plain float64 / JavaScript definitions, on shapes that
// exercise every SIMD tail (sizes not multiples of 4, tiles not multiples of 32).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { KernelMemoryError, Workspace, withWorkspace } from '../../server/src/kernels/kernels';
import { f32ToBf16Bits } from '../../server/src/checkpoint/dtype';
import { seededUniform as rand } from '../helpers';

const SHAPES: [number, number][] = [
  [1, 1],
  [3, 5],
  [4, 4],
  [7, 33],
  [32, 32],
  [33, 70],
  [64, 9],
  [130, 67],
];

test('transpose: dst[j][i] = src[i][j] exactly, for every tail shape', () => {
  const ws = new Workspace();
  for (const [rows, cols] of SHAPES) {
    const x = rand(rows * cols, rows * 31 + cols);
    const src = ws.f32(x.length, x),
      dst = ws.f32(x.length);
    ws.k.transpose(src.ptr, rows, cols, dst.ptr);
    const t = dst.view();
    for (let i = 0; i < rows; i++)
      for (let j = 0; j < cols; j++) assert.equal(t[j * rows + i], x[i * cols + j], `${rows}x${cols} (${i},${j})`);
  }
});

test('lowRankStep: Σ(w − q − B·A)² and target = w − B·A match a float64 computation', () => {
  const ws = new Workspace();
  for (const [rows, cols] of SHAPES)
    for (const r of [1, 3, 16]) {
      const w = rand(rows * cols, 1),
        q = rand(rows * cols, 2),
        b = rand(rows * r, 3),
        a = rand(r * cols, 4);
      const [W, Q, B, A, T, P] = [
        ws.f32(w.length, w),
        ws.f32(q.length, q),
        ws.f32(b.length, b),
        ws.f32(a.length, a),
        ws.f32(w.length),
        ws.f32(a.length),
      ];
      const got = ws.k.lowRankStep(W.ptr, Q.ptr, B.ptr, A.ptr, rows, cols, r, T.ptr, P.ptr);
      let want = 0;
      const target = T.view();
      for (let i = 0; i < rows; i++)
        for (let j = 0; j < cols; j++) {
          let lr = 0;
          for (let k = 0; k < r; k++) lr += b[i * r + k] * a[k * cols + j];
          const d = w[i * cols + j] - q[i * cols + j] - lr;
          want += d * d;
          assert.ok(
            Math.abs(target[i * cols + j] - (w[i * cols + j] - lr)) <= 1e-6,
            `${rows}x${cols} r${r} target (${i},${j})`,
          );
        }
      assert.ok(Math.abs(got - want) <= 1e-6 * want, `${rows}x${cols} r${r}: ${got} vs ${want}`);
      // target 0: the error alone, nothing written.
      const before = T.view().slice();
      assert.ok(
        Math.abs(ws.k.lowRankStep(W.ptr, Q.ptr, B.ptr, A.ptr, rows, cols, r, 0, P.ptr) - got) <= 1e-12 * (1 + got),
      );
      assert.deepEqual(T.view(), before);
    }
});

test('difference, sumSquares and absMaxScales equal their definitions (incl. short last blocks)', () => {
  const ws = new Workspace();
  for (const n of [1, 5, 64, 67, 1000]) {
    const a = rand(n, n),
      b = rand(n, n + 1);
    const [A, B, O] = [ws.f32(n, a), ws.f32(n, b), ws.f32(n)];
    let want = 0;
    for (let i = 0; i < n; i++) want += Math.fround(a[i] - b[i]) ** 2;
    assert.ok(Math.abs(ws.k.difference(A.ptr, B.ptr, O.ptr, n) - want) <= 1e-12 * want);
    assert.deepEqual(
      O.view(),
      Float32Array.from(a, (v, i) => v - b[i]),
    );
    assert.ok(Math.abs(ws.k.sumSquares(A.ptr, n) - a.reduce((s, v) => s + v * v, 0)) <= 1e-12 * n);
    for (const block of [4, 6, 64]) {
      const blocks = Math.ceil(n / block);
      const S = ws.f32(blocks);
      ws.k.absMaxScales(A.ptr, n, block, S.ptr);
      for (let k = 0; k < blocks; k++)
        assert.equal(
          S.view()[k],
          Math.max(...Array.from(a.subarray(k * block, (k + 1) * block), Math.abs)),
          `n ${n} block ${block} #${k}`,
        );
    }
  }
});

test('roundToBf16: the bits of f32ToBf16Bits (ties to even, NaN, ±Inf, −0, subnormals) and their values', () => {
  const special = [
    0,
    -0,
    1,
    -1,
    Infinity,
    -Infinity,
    NaN,
    1.00390625,
    1.01171875,
    3.4e38,
    -3.4e38,
    1e-40,
    -1e-45,
    65504.7,
  ];
  const x = Float32Array.from([...special, ...rand(999, 9).map((v) => v * 1e3)]);
  withWorkspace((ws) => {
    const X = ws.f32(x.length, x),
      bits = ws.u16(x.length);
    ws.k.roundToBf16(X.ptr, bits.ptr, x.length);
    const got = bits.view(),
      vals = new Uint32Array(X.view().slice().buffer);
    for (let i = 0; i < x.length; i++) {
      assert.equal(got[i], f32ToBf16Bits(x[i]), `bits of ${x[i]}`);
      assert.equal(vals[i], (got[i] << 16) >>> 0, `value of ${x[i]}`);
    }
  });
});

test('withWorkspace reuses an idle workspace, keeps concurrent jobs apart, and releases on throw', async () => {
  let first: Workspace | undefined;
  withWorkspace((ws) => {
    first = ws;
    ws.f32(10);
  });
  withWorkspace((ws) => assert.equal(ws, first, 'the idle workspace is reused'));
  let inner: Workspace | undefined;
  await withWorkspace(async (outer) => {
    await Promise.all([
      withWorkspace(async (ws) => {
        inner = ws;
      }),
    ]);
    assert.notEqual(inner, outer, 'a job running while another holds a workspace gets its own');
  });
  assert.throws(
    () =>
      withWorkspace(() => {
        throw new Error('boom');
      }),
    /boom/,
  );
  withWorkspace((ws) => assert.ok(ws === first || ws === inner, 'released after a throw'));
});

test('a matrix past wasm32 memory stops with a KernelMemoryError (not a crash), and the workspace stays usable', () => {
  withWorkspace((ws) => {
    assert.throws(
      () => ws.f32(2 ** 30),
      (e: Error) =>
        e instanceof KernelMemoryError &&
        /too large for the kernel memory \(4\.00 GiB needed, WebAssembly allows 4 GiB\)/.test(e.message),
    );
    const r = ws.f32(4, Float32Array.of(1, 2, 3, 4));
    assert.equal(ws.k.sumSquares(r.ptr, 4), 30);
  });
});
