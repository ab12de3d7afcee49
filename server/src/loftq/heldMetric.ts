// The metric H = G + λI of calibrated LoftQ (calibrationMetric.ts) held on the backend: the
// Krylov SVD multiplies its thin blocks by H (rsvd.ts), and ‖X·S‖² = tr(X·H·Xᵀ) for any S with
// S·Sᵀ = H measures output errors — no factor of H is ever formed.
//
// A full G is held as its lower triangle T (diagonal included) and its upper triangle — Tᵀ, G
// being symmetric, but read along G's rows instead of down its columns — each as horizontal bands
// cut to the columns where they are nonzero (band J of T: columns 0 … end of J; of Tᵀ: start of
// J … dim), so a product does (1 + 1/BANDS)/2 of the dense work and a band's slice of b is
// contiguous. Then H·b = T·b + Tᵀ·b + (λ − diag G)·b, and since tr(bᵀ·T·b) = tr(bᵀ·Tᵀ·b),
// tr(bᵀ·H·b) = 2·tr(bᵀ·T·b) + Σ_j (λ − g_jj)·‖row j of b‖²: one triangular product per measure.
//
// Natively with AVX512-BF16 the measure instead uses a third set of bands, the strictly lower
// triangle in bf16 (server/native/bf16.c; twice the float32 rate), and the diagonal g_jj + λ
// exact: tr(bᵀ·H·b) = 2·tr(bᵀ·T_strict·b) + Σ_j (g_jj + λ)·‖row j of b‖². Only the off-diagonal
// terms see bf16's rounding (relative 2⁻⁹ per factor, unbiased, summed over millions of terms):
// measured squared output errors move by ~1e-5 of themselves — against late iterates that differ
// by 0.3 % — and the products of the SVD stay float32.

import { withScratchBuffers } from '../base/scratchBuffers';
import type { DeviceMatrix, MatmulBackend } from '../linalg/backend';
import type { CalibrationMetric } from './calibrationMetric';
import { NativeBackend, type HeldMeasure } from '../linalg/nativeBackend';

/** Bands of a held triangle: 8 → 56% of the dense flops, 8 uploads of b per product. */
const BANDS = 8;

export interface HeldMetric {
  /** H·b for b (dim × n, row-major). */
  h: DeviceMatrix;
  /** tr(bᵀ·H·b) for b (dim × n), accumulated in float64: ‖X·S‖² for b = Xᵀ. */
  quadratic(b: Float32Array, n: number): Promise<number>;
  dispose(): void;
}

function checkShape(dim: number, b: Float32Array, n: number): void {
  if (b.length !== dim * n) throw new Error(`matmul shape mismatch: ${dim}x${dim} · ${b.length / n}x${n}`);
}

function diagonalMetric(d: ArrayLike<number>): HeldMetric {
  const dim = d.length;
  return {
    h: {
      rows: dim,
      cols: dim,
      async times(b: Float32Array, n: number, into?: Float32Array): Promise<Float32Array> {
        checkShape(dim, b, n);
        const out = into ?? new Float32Array(dim * n);
        for (let i = 0; i < dim; i++) for (let j = 0, o = i * n; j < n; j++) out[o + j] = b[o + j] * d[i];
        return out;
      },
      dispose() {},
    },
    async quadratic(b: Float32Array, n: number): Promise<number> {
      checkShape(dim, b, n);
      let sum = 0;
      for (let i = 0; i < dim; i++) {
        let row = 0;
        for (let j = 0, o = i * n; j < n; j++) row += b[o + j] * b[o + j];
        sum += d[i] * row;
      }
      return sum;
    },
    dispose() {},
  };
}

/** Row band [r0, r1) of a triangular dim × dim matrix, nonzero in columns [c0, c1) only. */
interface Band {
  r0: number;
  r1: number;
  c0: number;
  c1: number;
  held: DeviceMatrix;
}

/** Row band [r0, r1) of the triangle, columns [c0, c1), held on the backend. */
type HoldBand = (r0: number, r1: number, c0: number, c1: number) => Promise<DeviceMatrix>;

async function holdBands(dim: number, lower: boolean, holdBand: HoldBand): Promise<Band[]> {
  const bands: Band[] = [];
  const count = Math.max(1, Math.min(BANDS, dim));
  try {
    for (let b = 0; b < count; b++) {
      const r0 = Math.floor((dim * b) / count),
        r1 = Math.floor((dim * (b + 1)) / count);
      const [c0, c1] = lower ? [0, r1] : [r0, dim];
      bands.push({ r0, r1, c0, c1, held: await holdBand(r0, r1, c0, c1) });
    }
  } catch (e) {
    for (const band of bands) band.held.dispose();
    throw e;
  }
  return bands;
}

async function timesBands(bands: Band[], b: Float32Array, n: number, out: Float32Array): Promise<void> {
  for (const band of bands) {
    const dst = out.subarray(band.r0 * n, band.r1 * n);
    const got = await band.held.times(b.subarray(band.c0 * n, band.c1 * n), n, dst);
    if (got !== dst) dst.set(got);
  }
}

/** tr(bᵀ·H·b) = Σ_i b_iᵀ·(2·(T·b)_i + w_i·b_i) over rows i for H = T + Tᵀ + diag(w), a band's
 *  rows at a time, in a reused buffer: the whole product (as large as the matrix measured,
 *  46 MB for a 5632 × 2048 one) was fresh memory on each job thread. */
function quadraticBands(bands: Band[], w: Float64Array, b: Float32Array, n: number): Promise<number> {
  return withScratchBuffers(async (buffers) => {
    let sum = 0;
    for (const band of bands) {
      const dst = buffers.f32('metric.band', (band.r1 - band.r0) * n);
      const p = await band.held.times(b.subarray(band.c0 * n, band.c1 * n), n, dst);
      for (let row = band.r0, i = 0; row < band.r1; row++) {
        const f = w[row];
        for (let end = i + n, o = row * n; i < end; i++, o++) sum += b[o] * (2 * p[i] + f * b[o]);
      }
    }
    return sum;
  });
}

/** Bands of g's lower (or upper) triangle, zeros off it, each converted to float32 into a new
 *  array for the backend to hold — no whole-triangle copy (127 MB at width 5632). */
function copiedBands(g: ArrayLike<number>, dim: number, upper: boolean, backend: MatmulBackend): HoldBand {
  return (r0, r1, c0, c1) => {
    const w = c1 - c0;
    const part = new Float32Array((r1 - r0) * w);
    for (let i = r0; i < r1; i++) {
      const [from, to] = upper ? [i, c1] : [c0, i + 1];
      for (let j = from, o = (i - r0) * w - c0, src = i * dim; j < to; j++) part[o + j] = g[src + j];
    }
    return backend.hold(part, r1 - r0, w);
  };
}

/** Native: each band converted from float64 G's triangle in the module straight into its held
 *  copy, reading G where it lies (shared memory) — converting into a JavaScript buffer that the
 *  hold then copied faulted fresh pages for every matrix. */
function nativeBands(g: Float64Array, dim: number, upper: boolean, backend: NativeBackend): HoldBand {
  return async (r0, r1) => backend.holdTriangleBand(g, dim, r0, r1, upper);
}

export async function holdMetric(metric: CalibrationMetric, backend: MatmulBackend): Promise<HeldMetric> {
  if (metric.kind === 'diag') return diagonalMetric(metric.d);
  const { dim, g, lambda } = metric;
  let lowerBand: HoldBand, upperBand: HoldBand;
  if (backend instanceof NativeBackend) {
    lowerBand = nativeBands(g as Float64Array, dim, false, backend);
    upperBand = nativeBands(g as Float64Array, dim, true, backend);
  } else {
    lowerBand = copiedBands(g, dim, false, backend);
    upperBand = copiedBands(g, dim, true, backend);
  }
  // λ − g_jj, the diagonal counted twice by T + Tᵀ taken out and the ridge put in.
  const fix = Float64Array.from({ length: dim }, (_, j) => lambda - g[j * dim + j]);
  const held: Band[][] = [];
  try {
    held.push(await holdBands(dim, true, lowerBand), await holdBands(dim, false, upperBand));
  } catch (e) {
    for (const band of held.flat()) band.held.dispose();
    throw e;
  }
  const [lower, upper] = held;
  // The measure with AVX512-BF16: the strictly lower triangle in bf16 (twice the float32
  // products' rate), the diagonal g_jj + λ exact, all in the module.
  let bf16: HeldMeasure | undefined;
  if (backend instanceof NativeBackend && backend.bf16) {
    const diagonal = Float64Array.from({ length: dim }, (_, j) => g[j * dim + j] + lambda);
    try {
      bf16 = backend.holdBf16Measure(g as Float64Array, dim, [...lower.map((band) => band.r0), dim], diagonal);
    } catch (e) {
      for (const band of held.flat()) band.held.dispose();
      throw e;
    }
  }
  return {
    h: {
      rows: dim,
      cols: dim,
      async times(b: Float32Array, n: number, into?: Float32Array): Promise<Float32Array> {
        checkShape(dim, b, n);
        const out = into ?? new Float32Array(dim * n);
        await timesBands(lower, b, n, out);
        await withScratchBuffers(async (buffers) => {
          const up = buffers.f32('metric.upper', dim * n);
          await timesBands(upper, b, n, up);
          for (let i = 0; i < dim; i++)
            for (let j = 0, o = i * n; j < n; j++) out[o + j] += up[o + j] + fix[i] * b[o + j];
        });
        return out;
      },
      dispose() {},
    },
    async quadratic(b: Float32Array, n: number): Promise<number> {
      checkShape(dim, b, n);
      return bf16 ? bf16.measure(b, n) : quadraticBands(lower, fix, b, n);
    },
    dispose() {
      for (const band of held.flat()) band.held.dispose();
      bf16?.dispose();
    },
  };
}
