// The native element-wise kernels (server/native/loftq_native.c) against the WebAssembly
// ones, through the engine's own calls (quantizeResidual, the workspace's lowRankStep): the
// quantizer's codes, scales, values and residuals bit for bit — at every NF width (the 8-bit
// table takes the gather path), on blocks of zeros, of subnormals, with the block maximum
// negative, on table midpoints (the ambiguous cells) and on block sizes and lengths that
// leave partial vectors — and the low-rank step to float rounding (it fuses multiply-adds);
// the float64 Krylov algebra (block dot products, blocks of axpys, Gram matrices,
// Gram–Schmidt, the symmetric eigensolver) against the wasm kernels and their defining
// identities. Regions outside the memory are refused.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Workspace, wasmKernelsOn } from '../../server/src/kernels/kernels';
import { nativeAddon, nativeKernelsInUse, useNativeKernels } from '../../server/src/kernels/native';
import { codebook } from '../../server/src/quant/codebook';
import { quantizeResidual, quantizedRegions } from '../../server/src/quant/quantize';
import { requireNative } from './nativeRequired';
import { seededUniform as rand } from '../helpers';

/** Weights with every awkward block: zeros, subnormals, a negative maximum, midpoints. */
function awkward(n: number, blockSize: number, table: Float32Array, seed: number): Float32Array {
  const x = rand(n, seed);
  const block = (b: number) => x.subarray(b * blockSize, Math.min(n, (b + 1) * blockSize));
  block(1).fill(0);
  block(2).forEach((_, i, a) => (a[i] = (i % 3) * 1e-40));
  if (block(3).length) block(3)[0] = -0.9;
  const mids = block(4);
  if (mids.length) {
    mids[0] = 0.75; // the block's scale
    for (let i = 1; i < mids.length; i++) {
      const j = i % (table.length - 1);
      mids[i] = Math.fround((table[j] + table[j + 1]) / 2) * 0.75 * (i % 2 ? 1 : -1);
    }
  }
  return x;
}

interface Quantized {
  codes: Uint8Array;
  scales: Float32Array;
  values: Float32Array;
  residual: Float32Array;
  sum: number;
}

async function quantizeWith(x: Float32Array, w: Float32Array, table: Float32Array, blockSize: number) {
  const ws = new Workspace();
  const out = quantizedRegions(ws, x.length, blockSize);
  const residual = ws.f32(x.length);
  const sum = await quantizeResidual(
    ws,
    ws.f32(x.length, x),
    table,
    'nf',
    blockSize,
    out,
    ws.f32(w.length, w),
    residual,
  );
  return {
    codes: out.codes.view().slice(),
    scales: out.scales.view().slice(),
    values: out.values.view().slice(),
    residual: residual.view().slice(),
    sum,
  } satisfies Quantized;
}

const CASES = [2, 3, 4, 8].flatMap((bits) =>
  [
    [64, 64 * 9],
    [33, 33 * 7 + 5],
    [16, 200],
    [100, 1000],
  ].map(([blockSize, n]) => ({ bits, blockSize, n })),
);

const lowRankShapes: [number, number, number][] = [
  [1, 1, 1],
  [4, 64, 8],
  [7, 70, 3],
  [13, 130, 64],
  [33, 200, 17],
];

function lowRankWith(ws: Workspace, rows: number, cols: number, r: number, seed: number, withTarget: boolean) {
  const w = ws.f32(rows * cols, rand(rows * cols, seed));
  const q = ws.f32(rows * cols, rand(rows * cols, seed + 1));
  const b = ws.f32(rows * r, rand(rows * r, seed + 2));
  const a = ws.f32(r * cols, rand(r * cols, seed + 3));
  const target = ws.f32(rows * cols);
  const packed = ws.f32(r * cols);
  const sum = ws.k.lowRankStep(w.ptr, q.ptr, b.ptr, a.ptr, rows, cols, r, withTarget ? target.ptr : 0, packed.ptr);
  return { sum, target: target.view().slice() };
}

test('native quantizer and low-rank step equal the WebAssembly kernels', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  assert.equal(nativeKernelsInUse(), false, 'this test starts on the wasm kernels');
  const inputs = CASES.map((c, i) => {
    const table = codebook('nf', c.bits);
    return { ...c, table, x: awkward(c.n, c.blockSize, table, 11 + i), w: rand(c.n, 99 + i) };
  });
  const wasmQuantized: Quantized[] = [];
  for (const c of inputs) wasmQuantized.push(await quantizeWith(c.x, c.w, c.table, c.blockSize));
  const ws = new Workspace();
  const wasmLowRank = lowRankShapes.flatMap(([m, n, r], i) =>
    [true, false].map((tg) => lowRankWith(ws, m, n, r, i, tg)),
  );

  useNativeKernels(module);
  for (const [i, c] of inputs.entries()) {
    const native = await quantizeWith(c.x, c.w, c.table, c.blockSize);
    const wasm = wasmQuantized[i];
    const name = `NF${c.bits} block ${c.blockSize} n ${c.n}`;
    assert.deepEqual(native.scales, wasm.scales, `${name}: scales`);
    assert.deepEqual(native.codes, wasm.codes, `${name}: codes`);
    assert.deepEqual(native.values, wasm.values, `${name}: values`);
    assert.deepEqual(native.residual, wasm.residual, `${name}: residuals`);
    assert.ok(Math.abs(native.sum - wasm.sum) <= 1e-12 * wasm.sum, `${name}: Σ residual² ${native.sum} vs ${wasm.sum}`);
  }
  ws.reset();
  const nativeLowRank = lowRankShapes.flatMap(([m, n, r], i) =>
    [true, false].map((tg) => lowRankWith(ws, m, n, r, i, tg)),
  );
  for (const [i, got] of nativeLowRank.entries()) {
    const want = wasmLowRank[i];
    const [m, n, r] = lowRankShapes[i >> 1];
    const name = `${m}x${n} r${r}${i % 2 ? ' (no target)' : ''}`;
    assert.ok(Math.abs(got.sum - want.sum) <= 1e-5 * want.sum, `${name}: Σ ${got.sum} vs ${want.sum}`);
    for (let j = 0; j < got.target.length; j++)
      assert.ok(Math.abs(got.target[j] - want.target[j]) <= 2e-6 * (1 + r), `${name} target[${j}]`);
    if (i % 2)
      assert.ok(
        got.target.every((v) => v === 0),
        `${name}: nothing written`,
      );
  }
});

test('native kernels refuse regions outside the memory', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  const ws = new Workspace();
  const x = ws.f32(128);
  const memory = new Uint8Array(ws.memory.buffer);
  const past = memory.length;
  assert.throws(
    () => module.lowRankStep(memory, x.ptr, x.ptr, x.ptr, x.ptr, 1, 1, 1, past, x.ptr),
    /outside the memory/,
  );
  assert.throws(
    () => module.quantizeAbsMaxResidual(memory, x.ptr, 128, 64, x.ptr, past - 4, 16, x.ptr, x.ptr, x.ptr, x.ptr, x.ptr),
    /outside the memory/,
  );
  assert.throws(() => module.lowRankStep(memory, -4, 0, 0, 0, 1, 1, 1, 0, 0), /outside the memory/);
  // The wasm kernels of the same memory are still there, for comparison.
  assert.equal(typeof wasmKernelsOn(ws.memory).lowRankStep, 'function');
});

/** Columns of a float64 block with a few dependent ones (copies and sums of others). */
function columnsWithDependence(len: number, count: number, seed: number): Float64Array {
  const x = Float64Array.from(rand(len * count, seed));
  if (count > 3) {
    x.copyWithin(2 * len, 0, len); // column 2 = column 0
    for (let i = 0; i < len; i++) x[3 * len + i] = x[i] + x[len + i];
  }
  return x;
}

test('native float64 Krylov kernels agree with the WebAssembly ones and their definitions', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  const ws = new Workspace();
  const wasmK = wasmKernelsOn(ws.memory);
  type Float64Kernel = 'dotBlock' | 'axpyBlock' | 'orthonormalize' | 'gram' | 'symmetricEigen';
  const native = (name: Float64Kernel, ...a: number[]) => module[name](new Uint8Array(ws.memory.buffer), ...a);
  const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string) => {
    for (let i = 0; i < a.length; i++)
      assert.ok(Math.abs(a[i] - b[i]) <= tol * (1 + Math.abs(b[i])), `${what}[${i}]: ${a[i]} vs ${b[i]}`);
  };
  for (const [len, count] of [
    [1, 1],
    [7, 3],
    [33, 9],
    [130, 17],
    [257, 40],
  ]) {
    const block = ws.f64(len * count, Float64Array.from(rand(len * count, len + count)));
    // Gram matrices and block dot products (symmetric or not, odd tiles).
    const g1 = ws.f64(count * count),
      g2 = ws.f64(count * count);
    wasmK.gram(block.ptr, count, len, g1.ptr);
    native('gram', block.ptr, count, len, g2.ptr);
    close(g2.view(), g1.view(), 1e-12, `gram ${len}x${count}`);
    const p = Math.max(1, count >> 1);
    const d1 = ws.f64(p * (count - 1 || 1)),
      d2 = ws.f64(p * (count - 1 || 1));
    wasmK.dotBlock(block.ptr, 0, p, block.ptr, 1 % count, count - 1 || 1, len, d1.ptr, 0);
    native('dotBlock', block.ptr, 0, p, block.ptr, 1 % count, count - 1 || 1, len, d2.ptr, 0);
    close(d2.view(), d1.view(), 1e-12, `dotBlock ${len}x${count}`);
    // A block of axpys.
    const coef = ws.f64(count * 3, Float64Array.from(rand(count * 3, 5)));
    const x1 = ws.f64(len * 3, Float64Array.from(rand(len * 3, 6))),
      x2 = ws.f64(len * 3, x1.view());
    wasmK.axpyBlock(block.ptr, 0, count, coef.ptr, 3, x1.ptr, 0, 3, len, -0.5);
    native('axpyBlock', block.ptr, 0, count, coef.ptr, 3, x2.ptr, 0, 3, len, -0.5);
    close(x2.view(), x1.view(), 1e-12, `axpyBlock ${len}x${count}`);
    // Gram–Schmidt: orthonormal columns spanning what the wasm kernel's span; dependent ones zero.
    if (len >= count) {
      const first = count >> 2;
      const cols = columnsWithDependence(len, count, 7);
      const q1 = ws.f64(len * count, cols),
        q2 = ws.f64(len * count, cols),
        scratch = ws.f64(first * (count - first) + 2 * (count - first));
      wasmK.orthonormalize(q1.ptr, 0, first, len, scratch.ptr);
      wasmK.orthonormalize(q2.ptr, 0, first, len, scratch.ptr);
      wasmK.orthonormalize(q1.ptr, first, count - first, len, scratch.ptr);
      native('orthonormalize', q2.ptr, first, count - first, len, scratch.ptr);
      const n1 = ws.f64(count * count),
        n2 = ws.f64(count * count);
      wasmK.gram(q1.ptr, count, len, n1.ptr);
      wasmK.gram(q2.ptr, count, len, n2.ptr);
      // The same zero columns, and the same Gram matrix (identity on the others).
      close(n2.view(), n1.view(), 1e-10, `orthonormalize ${len}x${count}: QᵀQ`);
      const proj = (q: Float64Array, v: Float64Array) => {
        const out = new Float64Array(len);
        for (let j = 0; j < count; j++) {
          let d = 0;
          for (let i = 0; i < len; i++) d += q[j * len + i] * v[i];
          for (let i = 0; i < len; i++) out[i] += d * q[j * len + i];
        }
        return out;
      };
      const probe = Float64Array.from(rand(len, 8));
      close(proj(q2.view(), probe), proj(q1.view(), probe), 1e-9, `orthonormalize ${len}x${count}: span`);
    }
    // The eigensolver: A·v = λ·v, and the wasm kernel's eigenvalues.
    const n = count;
    const sym = g1.view().slice();
    const a1 = ws.f64(n * n, sym),
      a2 = ws.f64(n * n, sym),
      e1 = ws.f64(n),
      e2 = ws.f64(n),
      s1 = ws.f64(n),
      s2 = ws.f64(n);
    wasmK.symmetricEigen(a1.ptr, n, e1.ptr, s1.ptr);
    native('symmetricEigen', a2.ptr, n, e2.ptr, s2.ptr);
    const sorted = (v: Float64Array) => Array.from(v).sort((x, y) => x - y);
    const scale = Math.max(...sym.map(Math.abs));
    close(sorted(e2.view()), sorted(e1.view()), 1e-12 * scale, `eigenvalues ${n}`);
    const v = a2.view(),
      lambda = e2.view();
    for (let j = 0; j < n; j++)
      for (let i = 0; i < n; i++) {
        let av = 0;
        for (let c = 0; c < n; c++) av += sym[i * n + c] * v[c * n + j];
        assert.ok(Math.abs(av - lambda[j] * v[i * n + j]) <= 1e-10 * scale, `A·v = λ·v (${n}: ${i}, ${j})`);
      }
    ws.reset();
  }
  assert.throws(() => native('gram', 0, 1 << 20, 1 << 20, 0), /outside the memory/);
});

test('native transpose bands equal the WebAssembly ones exactly, over 1–3 threads', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  const ws = new Workspace();
  const wasmK = wasmKernelsOn(ws.memory);
  for (const [rows, cols] of [
    [1, 1],
    [7, 33],
    [64, 9],
    [130, 67],
    [100, 260],
  ])
    for (const [first, last] of [
      [0, rows],
      [Math.min(32, rows), rows],
    ])
      for (const threads of [1, 2, 3]) {
        const src = ws.f32(rows * cols, rand(rows * cols, rows + cols));
        const a = ws.f32(rows * cols),
          b = ws.f32(rows * cols);
        wasmK.transposeBand(src.ptr, rows, cols, a.ptr, first, last);
        module.transposeBand(new Uint8Array(ws.memory.buffer), src.ptr, rows, cols, b.ptr, first, last, threads);
        assert.deepEqual(b.view(), a.view(), `${rows}x${cols} rows ${first}…${last} on ${threads} threads`);
        ws.reset();
      }
  assert.throws(
    () => module.transposeBand(new Uint8Array(ws.memory.buffer), 0, 4, 4, 0, 3, 2, 1),
    /transposeBand: bad sizes/,
  );
});
