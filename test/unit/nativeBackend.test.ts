// The native backend's products (server/native/loftq_native.c) against a float64 product
// written here: every kernel set this CPU runs, on shapes that cross each tail of the
// blocking (rows not a multiple of the 6-row panel, columns not a multiple of the 16-wide
// strip, the 4-strip AVX-512 step or the 32-strip column block, inner sizes past the 256-row
// cache slice), over 1–3 threads; B given transposed (a linear layer's weights); blocks in
// shared memory (what the split backend sends); reused buffers never leak one matrix into
// another; bad arguments are refused with a message. Also the forward
// pass's pieces the module runs under this backend (XᵀX, attention, the SiLU gate) against
// their definitions.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { createBackend, type DeviceMatrix } from '../../server/src/linalg/backend';
import { NATIVE_ISAS, NativeBackend, nativeAddon } from '../../server/src/linalg/nativeBackend';
import { attention, siluGate } from '../../server/src/model/ops';
import { requireNative } from './nativeRequired';
import { seededUniform as rand } from '../helpers';

/** a · b in float64, and Σ|a_ip·b_pj| per entry (the scale of its rounding error). */
function product(a: Float32Array, m: number, k: number, b: Float32Array, n: number) {
  const out = new Float64Array(m * n);
  const mag = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let p = 0; p < k; p++) {
      const x = a[i * k + p];
      for (let j = 0; j < n; j++) {
        out[i * n + j] += x * b[p * n + j];
        mag[i * n + j] += Math.abs(x * b[p * n + j]);
      }
    }
  return { out, mag };
}

function shared(x: Float32Array): Float32Array {
  const y = new Float32Array(new SharedArrayBuffer(x.byteLength));
  y.set(x);
  return y;
}

const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [6, 16, 16],
  [7, 300, 17],
  [13, 513, 72],
  [12, 256, 64],
  [50, 1000, 130],
  [5, 3, 200],
  [2, 7, 4],
  [9, 300, 1100],
  // Thin blocks whose packed B is read in several row chunks (loftq_native.c, THIN_CHUNK_BYTES).
  [7, 9000, 5],
  [13, 3100, 40],
];

test('native products equal a float64 product on every kernel set, shape tail and thread count', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  const isas = NATIVE_ISAS.filter((i) => module.supports(i));
  assert.ok(isas.includes('generic'), 'the portable kernels run everywhere');
  for (const isa of isas)
    for (const threads of [1, 2, 3]) {
      const backend: NativeBackend = new NativeBackend(module, { isa, threads });
      for (const [m, k, n] of SHAPES) {
        // Every other shape's matrix in shared memory too: read in place (holdView), not copied.
        const a = m % 2 ? rand(m * k, m * 31 + k) : shared(rand(m * k, m * 31 + k));
        // The block in shared memory, as the split backend posts it.
        const b = new Float32Array(new SharedArrayBuffer(k * n * 4));
        b.set(rand(k * n, n + 7));
        const held = await backend.hold(a, m, k);
        const got = await held.times(b, n);
        held.dispose();
        const { out, mag } = product(a, m, k, b, n);
        for (let i = 0; i < got.length; i++)
          assert.ok(
            Math.abs(got[i] - out[i]) <= 1e-6 * mag[i] * Math.sqrt(k) + 1e-30,
            `${isa} ${threads} threads ${m}x${k}·${k}x${n} [${i}]: ${got[i]} vs ${out[i]}`,
          );
      }
      assert.equal(
        backend.flops,
        SHAPES.reduce((s, [m, k, n]) => s + 2 * m * k * n, 0),
      );
    }
});

test('a matrix in shared memory is read in place while held, and kept alive by the hold', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  const backend = new NativeBackend(module);
  const [m, k, n] = [20, 30, 5];
  let a: Float32Array | undefined = shared(rand(m * k, 3));
  const want = product(a, m, k, rand(k * n, 4), n).out;
  const held = await backend.hold(a, m, k);
  // In place: a write before a product shows in it (the contract forbids this; it proves no copy).
  a[0] += 1;
  const moved = await held.times(rand(k * n, 4), n);
  assert.ok(Math.abs(moved[0] - want[0]) > 1e-3, 'the held matrix is the caller memory');
  a[0] -= 1;
  a = undefined;
  (globalThis as { gc?: () => void }).gc?.();
  const got = await held.times(rand(k * n, 4), n);
  held.dispose();
  for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i] - want[i]) <= 1e-5, `[${i}]`);
});

test('native products: empty shapes give empty or zero results', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  const backend = new NativeBackend(module);
  const noInner = await backend.hold(new Float32Array(0), 5, 0);
  assert.deepEqual(await noInner.times(new Float32Array(0), 3), new Float32Array(15));
  const noRows = await backend.hold(new Float32Array(0), 0, 4);
  assert.deepEqual(await noRows.times(rand(8, 1), 2), new Float32Array(0));
  assert.deepEqual(await noInner.times(new Float32Array(0), 0), new Float32Array(0));
});

test('native buffers are reused without carrying one matrix into the next', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  const backend = new NativeBackend(module, { threads: 2 });
  const [m, k, n] = [300, 200, 24];
  const b = rand(k * n, 5);
  for (let round = 0; round < 4; round++) {
    // Released buffers go back to the cache; the next hold of the same size takes one.
    const a = rand(m * k, 100 + round);
    const held = await backend.hold(a, m, k);
    const got = await held.times(b, n);
    held.dispose();
    const { out, mag } = product(a, m, k, b, n);
    for (let i = 0; i < got.length; i++)
      assert.ok(Math.abs(got[i] - out[i]) <= 1e-6 * mag[i] * Math.sqrt(k), `round ${round} [${i}]`);
  }
});

/** w (n × k, row-major) transposed: k × n. */
function transposed(w: Float32Array, n: number, k: number): Float32Array {
  const t = new Float32Array(k * n);
  for (let j = 0; j < n; j++) for (let p = 0; p < k; p++) t[p * n + j] = w[j * k + p];
  return t;
}

test('native products with B given transposed equal the product with Wᵀ written out', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  for (const isa of NATIVE_ISAS.filter((i) => module.supports(i)))
    for (const threads of [1, 2, 3]) {
      const backend: NativeBackend = new NativeBackend(module, { isa, threads });
      for (const [m, k, n] of [...SHAPES, [7, 33, 45], [20, 8, 40], [6, 17, 700]] as [number, number, number][]) {
        const a = m % 2 ? rand(m * k, m + k) : shared(rand(m * k, m + k));
        const w = rand(n * k, n * 3 + k);
        const held = await backend.hold(a, m, k);
        const want = await held.times(transposed(w, n, k), n);
        held.dispose();
        const label = `${isa} ${threads} threads ${m}x${k}·(${n}x${k})ᵀ`;
        // The same strips, so the same sums: equal to the bit.
        assert.deepEqual(backend.timesTransposed(a, m, k, [w], n), want, label);
        // Blocks of rows (a group's weights) whose bounds fall inside strips.
        const cuts = [0, Math.floor(n / 3), n - 1, n];
        const blocks = cuts.slice(1).map((c, i) => w.subarray(cuts[i] * k, c * k));
        const into = new Float32Array(m * n).fill(NaN);
        assert.equal(backend.timesTransposed(a, m, k, blocks, n, into), into);
        assert.deepEqual(into, want, `${label} in blocks`);
      }
    }
});

test('the transposed product refuses blocks that do not make n × cols, with a message', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  const backend = new NativeBackend(module);
  const a = rand(6, 1);
  const mismatch = /timesTransposed: shape mismatch/;
  assert.throws(() => backend.timesTransposed(a, 2, 3, [rand(5, 2)], 2), mismatch);
  assert.throws(() => backend.timesTransposed(a, 2, 3, [rand(3, 2)], 2), mismatch);
  assert.throws(() => backend.timesTransposed(a, 2, 3, [rand(3, 2), rand(3, 3), rand(3, 4)], 2), mismatch);
  assert.throws(() => backend.timesTransposed(a, 2, 3, [rand(6, 2)], 2, new Float32Array(5)), mismatch);
  assert.throws(() => backend.timesTransposed(a, 2, 4, [rand(8, 2)], 2), /holdView: a.length/);
  const notFloat32 = [new Float64Array(6) as unknown as Float32Array];
  assert.throws(() => backend.timesTransposed(a, 2, 3, notFloat32, 2), /timesTransposed\(held/);
  const raw = module;
  const held = raw.hold(a, 2, 3);
  raw.release(held);
  assert.throws(() => raw.timesTransposed(held, rand(6, 2), 2, new Float32Array(4), 1, 'generic'), /released/);
  // A refused call leaves the backend usable.
  const w = rand(6, 2);
  assert.deepEqual(
    backend.timesTransposed(a, 2, 3, [w], 2),
    await (await backend.hold(a, 2, 3)).times(transposed(w, 2, 3), 2),
  );
});

test("a band of float64 G's lower or upper triangle held natively is the band a hold would copy", async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  for (const threads of [1, 3])
    for (const dim of [1, 7, 70, 301]) {
      const backend: NativeBackend = new NativeBackend(module, { threads });
      // A full matrix, not symmetric (each triangle must be read where it lies), in shared memory
      // as the calibration statistics are, on one of the thread counts.
      const l = threads === 3 ? new Float64Array(new SharedArrayBuffer(dim * dim * 8)) : new Float64Array(dim * dim);
      l.set(rand(dim * dim, dim + threads));
      for (const [r0, r1] of [
        [0, dim],
        [0, Math.ceil(dim / 3)],
        [Math.floor(dim / 3), Math.floor((2 * dim) / 3)],
        [dim - 1, dim],
        [dim >> 1, dim >> 1],
      ])
        for (const upper of [false, true]) {
          const [c0, c1] = upper ? [r0, dim] : [0, r1];
          // The band of tril(l) or triu(l) as float32, zeros off the triangle (l is not symmetric).
          const band = new Float32Array((r1 - r0) * (c1 - c0));
          for (let i = r0; i < r1; i++)
            for (let j = c0; j < c1; j++)
              band[(i - r0) * (c1 - c0) + j - c0] = (upper ? j >= i : j <= i) ? l[i * dim + j] : 0;
          const held: DeviceMatrix = backend.holdTriangleBand(l, dim, r0, r1, upper);
          assert.deepEqual([held.rows, held.cols], [r1 - r0, c1 - c0]);
          const n = 5,
            b = rand((c1 - c0) * n, r0 + r1);
          const want: Float32Array = await (await backend.hold(band, r1 - r0, c1 - c0)).times(b, n);
          assert.deepEqual(await held.times(b, n), want, `${dim} [${r0}, ${r1}) ${upper ? 'triu' : 'tril'}`);
          held.dispose();
        }
    }
  const l = new Float64Array(16);
  assert.throws(() => module.holdTriangleBand(l, 3, 0, 1, 0, 1), /holdTriangleBand: bad sizes/);
  assert.throws(() => module.holdTriangleBand(l, 4, 3, 2, 0, 1), /holdTriangleBand: bad sizes/);
  assert.throws(() => module.holdTriangleBand(l, 4, 0, 5, 1, 1), /holdTriangleBand: bad sizes/);
  assert.throws(() => module.holdTriangleBand(new Float32Array(16) as never, 4, 0, 1, 0, 1), /holdTriangleBand\(g/);
  const raw = module.holdTriangleBand(l, 4, 1, 3, 1, 1);
  module.release(raw);
  assert.throws(() => module.times(raw, rand(6, 1), 2, new Float32Array(4), 1, 'generic'), /released/);
});

/** x rounded to bf16 (8 significant bits), to nearest even: the top half of its float32 bits. */
function bf16(x: number): number {
  const bits = new Uint32Array(Float32Array.of(x).buffer);
  const u = bits[0];
  bits[0] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) << 16;
  return new Float32Array(bits.buffer)[0];
}

const BF16_MEASURE =
  'bf16 measure: tr(bᵀ·(T + Tᵀ + diag w)·b), T strictly lower in bf16, b rounded to bf16, as float64 says';
test(BF16_MEASURE, async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  if (!module.bf16()) return t.skip('this CPU has no AVX512-BF16: the bf16 measure is not used');
  for (const threads of [1, 3])
    for (const dim of [1, 2, 7, 70, 301]) {
      const backend: NativeBackend = new NativeBackend(module, { threads, isa: 'avx512' });
      assert.ok(backend.bf16);
      const g = threads === 3 ? new Float64Array(new SharedArrayBuffer(dim * dim * 8)) : new Float64Array(dim * dim);
      g.set(rand(dim * dim, dim * 5 + threads));
      const w = Float64Array.from(rand(dim, dim + 11));
      // One band, three uneven ones (an odd width among them), one row per band.
      for (const bounds of [
        [0, dim],
        [...new Set([0, Math.floor(dim / 3), Math.floor(dim / 2) + 1, dim])].filter((v) => v <= dim),
        Array.from({ length: Math.min(dim, 9) + 1 }, (_, k) => (k === Math.min(dim, 9) ? dim : k)),
      ]) {
        const held = backend.holdBf16Measure(g, dim, bounds, w);
        for (const n of [1, 5, 17, 40]) {
          const b = rand(dim * n, dim + n);
          let want = 0,
            mag = 0;
          for (let i = 0; i < dim; i++)
            for (let c = 0; c < n; c++) {
              let p = 0;
              for (let j = 0; j < i; j++) {
                const term = bf16(g[i * dim + j]) * bf16(b[j * n + c]);
                p += term;
                mag += 2 * Math.abs(b[i * n + c] * term);
              }
              want += b[i * n + c] * (2 * p + w[i] * b[i * n + c]);
              mag += Math.abs(w[i]) * b[i * n + c] ** 2;
            }
          const got = held.measure(b, n);
          assert.ok(Math.abs(got - want) <= 1e-6 * mag, `${dim} bands ${bounds} n=${n}: ${got} vs ${want}`);
        }
        held.dispose();
        assert.throws(() => held.measure(rand(dim, 1), 1), /disposed/);
      }
    }
  const g = new Float64Array(16),
    w = new Float64Array(4);
  assert.throws(() => module.holdStrictLowerBandBf16(g, 4, 3, 2, 1), /holdStrictLowerBandBf16: bad sizes/);
  assert.throws(() => module.holdStrictLowerBandBf16(g, 3, 0, 1, 1), /holdStrictLowerBandBf16: bad sizes/);
  const [top, bottom] = [module.holdStrictLowerBandBf16(g, 4, 0, 2, 1), module.holdStrictLowerBandBf16(g, 4, 2, 4, 1)];
  assert.throws(() => module.measureBf16([bottom, top], rand(8, 1), 2, w, 1), /do not tile the rows/);
  assert.throws(() => module.measureBf16([top], rand(8, 1), 2, w, 1), /shape mismatch/);
  assert.throws(() => module.measureBf16([top, bottom], rand(6, 1), 2, w, 1), /shape mismatch/);
  assert.throws(() => module.times(top, rand(4, 1), 2, new Float32Array(4), 1, 'avx512'), /not on a bf16/);
  assert.throws(() => module.timesTransposed(top, rand(4, 1), 2, new Float32Array(4), 1, 'avx512'), /not on a bf16/);
  module.release(top);
  assert.throws(() => module.measureBf16([top, bottom], rand(8, 1), 2, w, 1), /released/);
  module.release(bottom);
});

test('bf16 transposed products (the calibration pass): A and W rounded to bf16, as float64 says', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  // Without AVX512-BF16 (or under the avx2 kernels) the backend says so instead of running.
  const avx2 = module.supports('avx2') ? new NativeBackend(module, { isa: 'avx2', threads: 1 }) : undefined;
  if (avx2)
    assert.throws(() => avx2.timesTransposed(rand(4, 1), 2, 2, [rand(4, 2)], 2, undefined, true), /AVX512-BF16/);
  if (!module.bf16()) return t.skip('this CPU has no AVX512-BF16: the pass runs in float32');
  for (const threads of [1, 3]) {
    const backend: NativeBackend = new NativeBackend(module, { threads, isa: 'avx512' });
    // Odd inner sizes (a padding column), row and strip tails, past the 128-pair slice.
    for (const [m, k, n] of [...SHAPES, [7, 33, 45], [20, 8, 40], [6, 17, 700], [13, 301, 33]] as [
      number,
      number,
      number,
    ][]) {
      const a = rand(m * k, m * 7 + k),
        w = rand(n * k, n * 5 + k);
      // Blocks of rows whose bounds fall inside strips, as a linear group's weights.
      const cuts = [...new Set([0, Math.floor(n / 3), n - 1, n])];
      const blocks = cuts.slice(1).map((c, i) => w.subarray(cuts[i] * k, c * k));
      const got = backend.timesTransposed(a, m, k, blocks, n, undefined, true);
      for (let i = 0; i < m; i++)
        for (let j = 0; j < n; j++) {
          let want = 0,
            mag = 0;
          for (let p = 0; p < k; p++) {
            const term = bf16(a[i * k + p]) * bf16(w[j * k + p]);
            want += term;
            mag += Math.abs(term);
          }
          const e = Math.abs(got[i * n + j] - want);
          assert.ok(e <= 1e-6 * mag * Math.sqrt(k), `${threads} threads ${m}x${k}·(${n}x${k})ᵀ [${i}, ${j}]: ${e}`);
        }
    }
  }
});

test('native backend refuses bad arguments and a disposed matrix with a message', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  const backend = new NativeBackend(module);
  assert.throws(() => module.hold(new Float64Array(4) as unknown as Float32Array, 2, 2), /hold\(a: Float32Array/);
  assert.throws(() => module.hold(new Float32Array(5), 2, 2), /a.length is not rows × cols/);
  assert.throws(() => module.hold(new Float32Array(4), -2, -2), /hold\(a: Float32Array/);
  const held = await backend.hold(rand(6, 1), 2, 3);
  await assert.rejects(held.times(rand(5, 1), 2), /shape mismatch/);
  held.dispose();
  await assert.rejects(held.times(rand(6, 1), 2), /disposed/);
  const raw = module.hold(rand(6, 1), 2, 3);
  assert.throws(() => module.times(raw, rand(6, 1), 2, new Float32Array(3), 1, 'generic'), /shape mismatch/);
  assert.throws(() => module.times(raw, rand(6, 1), 2, new Float32Array(4), 1, 'sse9' as 'generic'), /times\(held/);
  module.release(raw);
  assert.throws(() => module.times(raw, rand(6, 1), 2, new Float32Array(4), 1, 'generic'), /released/);
  assert.throws(() => new NativeBackend(module, { isa: 'nonsense' as 'generic' }), /does not run the nonsense/);
});

test('--backend native names what is missing when the module is not there, or runs when it is', async () => {
  const { module, problem } = nativeAddon();
  if (module) {
    const backend = await createBackend('native');
    assert.equal(backend.name, 'native');
    assert.equal((backend as NativeBackend).isa, module.isa());
  } else {
    await assert.rejects(createBackend('native'), new RegExp(`backend 'native' is not available: .*${problem}`));
  }
});

const bf16Of = (x: number) => bf16(x);
const GRAM = 'native XᵀX (calibration statistics): the upper triangle to float32 rounding, the lower untouched';
test(GRAM, async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  // 2100 tokens: two chunks of the module's 2048 (an odd count in the second: bf16's padding
  // pair); widths that split unevenly into its 8 bands (which start on 16-column strips), and
  // one wider than a 512-column block. bf16 (X rounded in the products) where the CPU has it.
  for (const bf16 of module.bf16() ? [false, true] : [false])
    for (const [tokens, dim, threads] of [
      [2100, 37, 2],
      [300, 130, 3],
      [5, 1, 1],
      [40, 600, 2],
    ]) {
      const backend: NativeBackend = new NativeBackend(module, { threads, isa: bf16 ? 'avx512' : undefined });
      const x = rand(tokens * dim, dim);
      const xr = bf16 ? x.map(bf16Of) : x;
      const g = new Float64Array(dim * dim).fill(0.5);
      const [t0, t1] = [3, tokens];
      backend.gramUpper(x, dim, t0, t1, g, bf16);
      for (let i = 0; i < dim; i++)
        for (let j = 0; j < dim; j++) {
          if (j < i) {
            assert.equal(g[i * dim + j], 0.5, `lower (${i}, ${j}) untouched`);
            continue;
          }
          let want = 0.5,
            mag = 0;
          for (let s = t0; s < t1; s++) {
            want += xr[s * dim + i] * xr[s * dim + j];
            mag += Math.abs(xr[s * dim + i] * xr[s * dim + j]);
          }
          assert.ok(
            Math.abs(g[i * dim + j] - want) <= 1e-6 * mag,
            `${bf16 ? 'bf16 ' : ''}${tokens}x${dim} (${i}, ${j})`,
          );
        }
      const bandStart = (b: number) => (b === 8 ? dim : Math.floor((dim * b) / 128) * 16);
      // The products' work: float32 bands whole; bf16 panels of 6 rows from their diagonal's
      // 16-column strip on (only the upper triangle is summed).
      let flops = 0;
      for (let b = 0; b < 8; b++) {
        const [r0, r1] = [bandStart(b), bandStart(b + 1)];
        if (!bf16) flops += 2 * (r1 - r0) * (t1 - t0) * (dim - r0);
        else
          for (let row0 = 0; r0 + row0 < r1; row0 += 6)
            flops += 2 * Math.min(6, r1 - r0 - row0) * (t1 - t0) * (dim - r0 - Math.floor(row0 / 16) * 16);
      }
      assert.equal(backend.flops, flops);
    }
  assert.throws(() => module.gramUpper(rand(10, 1), 5, 0, 3, new Float64Array(25), 1, 'generic'), /shape mismatch/);
  if (module.supports('avx2')) {
    const avx2 = new NativeBackend(module, { isa: 'avx2', threads: 1 });
    assert.throws(() => avx2.gramUpper(rand(10, 1), 5, 0, 2, new Float64Array(25), true), /AVX512-BF16/);
  }
});

const ATTENTION =
  'native attention and SiLU gate equal model/ops.ts (grouped heads, several sequences, a sliding window)';
test(ATTENTION, async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  for (const [heads, kvHeads, headDim, window, threads] of [
    [4, 2, 8, 0, 2],
    [6, 6, 5, 3, 3],
    [2, 1, 16, 0, 1],
  ]) {
    const lens = [7, 1, 12];
    const tokens = lens.reduce((a, b) => a + b, 0);
    const qDim = heads * headDim,
      kvDim = kvHeads * headDim;
    const shape = {
      heads,
      kvHeads,
      headDim,
      stride: qDim + 2 * kvDim,
      qOff: 0,
      kOff: qDim,
      vOff: qDim + kvDim,
      slidingWindow: window || undefined,
    };
    const qkv = rand(tokens * shape.stride, heads * 7 + headDim);
    const starts = lens.map((_, k) => lens.slice(0, k).reduce((a, b) => a + b, 0));
    const want = new Float32Array(tokens * qDim);
    lens.forEach((len, k) => attention(qkv, starts[k], len, shape, want, starts[k]));
    const got = new Float32Array(tokens * qDim);
    const backend: NativeBackend = new NativeBackend(module, { threads });
    backend.attention(
      qkv,
      lens.map((len, k) => ({ start: starts[k], len, outRow: starts[k] })),
      shape,
      got,
    );
    for (let i = 0; i < got.length; i++)
      assert.ok(Math.abs(got[i] - want[i]) <= 1e-6 * (1 + Math.abs(want[i])), `attention [${i}]`);
    const inter = 9;
    const gu = rand(tokens * 2 * inter, 3).map((v) => v * 8);
    const a = new Float32Array(tokens * inter),
      b = new Float32Array(tokens * inter);
    siluGate(gu, tokens, inter, a);
    backend.siluGate(gu, tokens, inter, b);
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= 1e-6 * (1 + Math.abs(a[i])), `silu [${i}]`);
  }
  const backend = new NativeBackend(module);
  const bad = { heads: 2, kvHeads: 1, headDim: 4, stride: 16, qOff: 0, kOff: 8, vOff: 12 };
  assert.throws(
    () => backend.attention(new Float32Array(16), [{ start: 0, len: 2, outRow: 0 }], bad, new Float32Array(16)),
    /outside qkv or out/,
  );
});

test("bf16 products take a BF16 checkpoint's weights as read: the bits of their float32 widening", async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  if (!module.supports('avx512') || !module.bf16()) return t.skip('this CPU has no AVX512-BF16: no bf16 products');
  const backend = new NativeBackend(module, { isa: 'avx512', threads: 3 });
  for (const [m, k, n] of [...SHAPES, [7, 33, 45], [6, 17, 700]] as [number, number, number][]) {
    const a = rand(m * k, m + k);
    // bf16 bit patterns (odd widths and negative values included), and their exact widening.
    const bits = Uint16Array.from(rand(n * k, n + 5 * k), (v) => new Uint32Array(Float32Array.of(v).buffer)[0] >>> 16);
    const widened = new Float32Array(new Uint32Array(Array.from(bits, (b) => b << 16)).buffer);
    const cuts = [0, Math.floor(n / 3), n];
    const blocks = <T extends Float32Array | Uint16Array>(w: T) =>
      cuts.slice(1).map((c, i) => w.subarray(cuts[i] * k, c * k) as T);
    const want = backend.timesTransposed(a, m, k, blocks(widened), n, undefined, true);
    const got = backend.timesTransposed(a, m, k, blocks(bits), n, undefined, true);
    assert.deepEqual(got, want, `${m}x${k}·(${n}x${k})ᵀ`);
  }
  const a = rand(6, 1);
  assert.throws(() => backend.timesTransposed(a, 2, 3, [new Uint16Array(6)], 2), /bf16 weights need bf16 products/);
  const mixed = [new Float32Array(3), new Uint16Array(3)] as unknown as Float32Array[];
  assert.throws(() => backend.timesTransposed(a, 2, 3, mixed, 2, undefined, true), /mixed/);
});
