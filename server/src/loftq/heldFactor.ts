// The factor S of calibrated LoftQ (calibrationFactor.ts) held on the backend as two
// operators, S and Sᵀ, so that (W − Q)·S is never formed: the Krylov SVD applies S to its
// thin blocks ((W − Q)·(S·Ω) and Sᵀ·((W − Q)ᵀ·Y), rows·cols·k + cols²·k per product instead
// of rows·cols² once per iteration), and ‖X·S‖² is ‖Sᵀ·Xᵀ‖².
//
// A full S is the lower-triangular L: held as horizontal bands, each cut to the columns
// where it is nonzero (band J of L: columns 0 … end of J; of Lᵀ: start of J … dim), so a
// product does (1 + 1/BANDS)/2 of the dense work and the band's slice of b is contiguous.

import { withScratchBuffers } from '../base/scratchBuffers';
import type { DeviceMatrix, MatmulBackend } from '../linalg/backend';
import type { CalibrationFactor } from './calibrationFactor';
import { NativeBackend } from '../linalg/nativeBackend';

/** Bands of a held triangular factor: 8 → 56% of the dense flops, 8 uploads of b per product. */
const BANDS = 8;

export interface HeldFactor {
  /** S (dim × dim) times b (dim × n). */
  s: FactorOperator;
  /** Sᵀ times b. */
  sT: FactorOperator;
  dispose(): void;
}

/** S or Sᵀ (dim × dim), and the squared norm of its product with b (dim × n) without the
 *  product in memory whole. */
interface FactorOperator extends DeviceMatrix {
  /** Σ p² over the float32 product p = this · b, in float64, row after row. */
  squaredNorm(b: Float32Array, n: number): Promise<number>;
}

function diagonalOperator(s: ArrayLike<number>): FactorOperator {
  const dim = s.length;
  return {
    rows: dim,
    cols: dim,
    async times(b: Float32Array, n: number, into?: Float32Array): Promise<Float32Array> {
      const out = into ?? new Float32Array(dim * n);
      for (let i = 0; i < dim; i++) for (let j = 0, o = i * n; j < n; j++) out[o + j] = b[o + j] * s[i];
      return out;
    },
    async squaredNorm(b: Float32Array, n: number): Promise<number> {
      let sum = 0;
      for (let i = 0; i < dim; i++)
        for (let j = 0, o = i * n; j < n; j++) {
          const p = Math.fround(b[o + j] * s[i]); // the product as times stores it
          sum += p * p;
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

/** Row band [r0, r1) of the triangular factor, columns [c0, c1), held on the backend. */
type HoldBand = (r0: number, r1: number, c0: number, c1: number) => Promise<DeviceMatrix>;

async function holdTriangular(dim: number, lower: boolean, holdBand: HoldBand): Promise<FactorOperator> {
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
  return {
    rows: dim,
    cols: dim,
    async times(b: Float32Array, n: number, into?: Float32Array): Promise<Float32Array> {
      if (b.length !== dim * n) throw new Error(`matmul shape mismatch: ${dim}x${dim} · ${b.length / n}x${n}`);
      const out = into ?? new Float32Array(dim * n);
      for (const band of bands) {
        const dst = out.subarray(band.r0 * n, band.r1 * n);
        const got = await band.held.times(b.subarray(band.c0 * n, band.c1 * n), n, dst);
        if (got !== dst) dst.set(got);
      }
      return out;
    },
    // A band's rows at a time, in a reused buffer: the whole product (as large as the matrix
    // measured, 46 MB for a 5632 × 2048 one) was fresh memory on each job thread.
    squaredNorm(b: Float32Array, n: number): Promise<number> {
      if (b.length !== dim * n) throw new Error(`matmul shape mismatch: ${dim}x${dim} · ${b.length / n}x${n}`);
      return withScratchBuffers(async (buffers) => {
        let sum = 0;
        for (const band of bands) {
          const dst = buffers.f32('factor.band', (band.r1 - band.r0) * n);
          const p = await band.held.times(b.subarray(band.c0 * n, band.c1 * n), n, dst);
          for (let i = 0; i < p.length; i++) sum += p[i] * p[i];
        }
        return sum;
      });
    },
    dispose() {
      for (const band of bands) band.held.dispose();
    },
  };
}

/** Lᵀ of a lower-triangular L, in 64 × 64 tiles (a row-by-row transpose misses the cache on
 *  every write at these widths). */
function transposedLower(l: Float32Array, dim: number): Float32Array {
  const t = new Float32Array(dim * dim);
  const TILE = 64;
  for (let i0 = 0; i0 < dim; i0 += TILE)
    for (let j0 = 0; j0 <= i0; j0 += TILE) {
      const i1 = Math.min(dim, i0 + TILE),
        j1 = Math.min(dim, j0 + TILE);
      for (let i = i0; i < i1; i++) for (let j = j0, o = i * dim; j < j1 && j <= i; j++) t[j * dim + i] = l[o + j];
    }
  return t;
}

/** Bands cut from a float32 copy of a whole triangular matrix t (dim × dim), each copied
 *  into a new array for the backend to hold. */
function copiedBands(t: Float32Array, dim: number, backend: MatmulBackend): HoldBand {
  return (r0, r1, c0, c1) => {
    const w = c1 - c0;
    const part = new Float32Array((r1 - r0) * w);
    for (let i = r0; i < r1; i++) part.set(t.subarray(i * dim + c0, i * dim + c1), (i - r0) * w);
    return backend.hold(part, r1 - r0, w);
  };
}

/** Native: each band converted from float64 L (and transposed, for Lᵀ) in the module straight
 *  into its held copy — the JavaScript conversion, transpose and band copies took ~2 s per
 *  matrix at a 5632-wide input, and converting into a JavaScript buffer that the hold then
 *  copied faulted that buffer's fresh pages (2 × 16 MB) for every matrix and copied 142 MB. */
function nativeBands(l: Float64Array, dim: number, transpose: boolean, backend: NativeBackend): HoldBand {
  return async (r0, r1) => backend.holdLowerBand(l, dim, r0, r1, transpose);
}

export async function holdFactor(factor: CalibrationFactor, backend: MatmulBackend): Promise<HeldFactor> {
  if (factor.kind === 'diag') {
    const op = diagonalOperator(factor.s);
    return { s: op, sT: op, dispose() {} };
  }
  const dim = factor.dim;
  const l = factor.l as Float64Array;
  let lower: HoldBand, upper: HoldBand;
  if (backend instanceof NativeBackend) {
    lower = nativeBands(l, dim, false, backend);
    upper = nativeBands(l, dim, true, backend);
  } else {
    const l32 = new Float32Array(l); // not Float32Array.from: its iterator path is ~50× slower
    lower = copiedBands(l32, dim, backend);
    upper = copiedBands(transposedLower(l32, dim), dim, backend);
  }
  const s = await holdTriangular(dim, true, lower);
  let sT: FactorOperator;
  try {
    sT = await holdTriangular(dim, false, upper);
  } catch (e) {
    s.dispose();
    throw e;
  }
  return {
    s,
    sT,
    dispose() {
      s.dispose();
      sT.dispose();
    },
  };
}

/** ‖X·S‖_F² for row-major X (rows × dim) given Xᵀ (dim × rows): the sum of squares of Sᵀ·Xᵀ,
 *  accumulated in float64. */
export function squaredNormTimesFactor(xT: Float32Array, rows: number, held: HeldFactor): Promise<number> {
  return held.sT.squaredNorm(xT, rows);
}
