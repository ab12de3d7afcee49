// The native element-wise kernels (server/native/loftq_native.c) against the WebAssembly
// ones, through the engine's own calls (quantizeResidual, the workspace's lowRankStep): the
// quantizer's codes, scales, values and residuals bit for bit — at every NF width (the 8-bit
// table takes the gather path), on blocks of zeros, of subnormals, with the block maximum
// negative, on table midpoints (the ambiguous cells) and on block sizes and lengths that
// leave partial vectors — and the low-rank step to float rounding (it fuses multiply-adds).
// Regions outside the memory are refused.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Workspace, wasmKernelsOn } from '../../server/src/kernels/kernels';
import { nativeAddon, nativeKernelsInUse, useNativeKernels } from '../../server/src/kernels/native';
import { codebook } from '../../server/src/quant/codebook';
import { quantizeResidual, quantizedRegions } from '../../server/src/quant/quantize';
import { requireNative } from './nativeRequired';

const rand = (len: number, seed: number) => {
  let s = seed >>> 0;
  return Float32Array.from({ length: len }, () => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32 - 0.5);
};

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
