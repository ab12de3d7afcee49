import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { calibratedLoftqMatrix } from '../../server/src/loftq/calibrated';
import { calibrationMetric, StatisticsError } from '../../server/src/loftq/calibrationMetric';
import { holdMetric } from '../../server/src/loftq/heldMetric';
import { loftqMatrix } from '../../server/src/loftq/loftq';
import { createBackend, type MatmulBackend } from '../../server/src/linalg/backend';
import { NativeBackend, nativeAddon } from '../../server/src/linalg/nativeBackend';
import { requireNative } from './nativeRequired';
import { gaussian } from '../../server/src/linalg/dense';
import type { InputStat } from '../../server/src/model/stats';
import type { MatrixSettings } from '../../server/src/protocol/lsp_ext';

// --- independent float64 references (none of the engine's code) ---

/** Calibration inputs with correlated, unevenly scaled features, as real activations have:
 *  X = Z·C with C a random mixing whose columns are scaled over two orders of magnitude. */
function activations(tokens: number, dim: number, seed: number): Float64Array {
  const z = gaussian(tokens * dim, seed);
  const c = gaussian(dim * dim, seed + 1);
  const x = new Float64Array(tokens * dim);
  for (let j = 0; j < dim; j++) {
    const scale = 10 ** (-1 + (2 * j) / dim) * (j % 7 === 0 ? 8 : 1);
    for (let t = 0; t < tokens; t++) {
      let v = 0;
      for (let p = 0; p < dim; p++) v += z[t * dim + p] * c[p * dim + j];
      x[t * dim + j] = (v * scale) / Math.sqrt(dim);
    }
  }
  return x;
}

function secondMoment(x: Float64Array, tokens: number, dim: number): Float64Array {
  const g = new Float64Array(dim * dim);
  for (let t = 0; t < tokens; t++)
    for (let i = 0; i < dim; i++) for (let j = 0; j < dim; j++) g[i * dim + j] += x[t * dim + i] * x[t * dim + j];
  return g.map((v) => v / tokens);
}

/** Weights with a few strong directions on top of noise (LLM-like spectra). */
function weights(rows: number, cols: number, seed: number): Float32Array {
  const noise = gaussian(rows * cols, seed);
  const u = gaussian(rows * 3, seed + 2),
    v = gaussian(3 * cols, seed + 3);
  const w = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < cols; j++) {
      let lr = 0;
      for (let p = 0; p < 3; p++) lr += u[i * 3 + p] * v[p * cols + j];
      w[i * cols + j] = 0.02 * noise[i * cols + j] + 0.01 * lr;
    }
  return w;
}

/** E = W − Q − B·A in float64 from the returned pieces. */
function residualOf(
  w: Float32Array,
  q: Float32Array,
  b: Float32Array,
  a: Float32Array,
  rows: number,
  cols: number,
  r: number,
): Float64Array {
  const e = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < cols; j++) {
      let lr = 0;
      for (let p = 0; p < r; p++) lr += b[i * r + p] * a[p * cols + j];
      e[i * cols + j] = w[i * cols + j] - q[i * cols + j] - lr;
    }
  return e;
}

/** tr(E·H·Eᵀ) for symmetric H: the squared output error ‖E·S‖² with S·Sᵀ = H. */
function quadratic(e: ArrayLike<number>, h: Float64Array, rows: number, cols: number): number {
  let s = 0;
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < cols; j++) {
      let v = 0;
      for (let k = 0; k < cols; k++) v += h[j * cols + k] * e[i * cols + k];
      s += e[i * cols + j] * v;
    }
  return s;
}

const withRidge = (g: Float64Array, dim: number, lambda: number) =>
  g.map((v, i) => (i % (dim + 1) === 0 ? v + lambda : v));

/** Eigenvalues of a symmetric n × n matrix (cyclic Jacobi, float64), descending. */
function jacobiEigenvalues(m: Float64Array, n: number): number[] {
  const a = Float64Array.from(m);
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p * n + q] ** 2;
    if (off < 1e-30) break;
    for (let p = 0; p < n; p++)
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1),
          s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p],
            akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k],
            aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
      }
  }
  return Array.from({ length: n }, (_, i) => a[i * n + i]).sort((x, y) => y - x);
}

/** min over rank-r L of ‖(R − L)·S‖² (Eckart–Young on R·S: L·S has rank ≤ r): the sum of the
 *  squared singular values of R·S beyond the r-th = the eigenvalues of (R·S)(R·S)ᵀ = R·H·Rᵀ
 *  (H = S·Sᵀ) beyond the r-th. */
function optimalTail(rr: Float64Array, h: Float64Array, rows: number, cols: number, r: number): number {
  const rh = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < cols; j++) {
      let v = 0;
      for (let k = 0; k < cols; k++) v += rr[i * cols + k] * h[k * cols + j];
      rh[i * cols + j] = v;
    }
  const m = new Float64Array(rows * rows);
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < rows; j++) {
      let v = 0;
      for (let k = 0; k < cols; k++) v += rh[i * cols + k] * rr[j * cols + k];
      m[i * rows + j] = v;
    }
  return jacobiEigenvalues(m, rows)
    .slice(r)
    .reduce((a, b) => a + Math.max(b, 0), 0);
}

const ROWS = 48,
  COLS = 40,
  TOKENS = 400;
const settings = (bits: number, iters: number): MatrixSettings => ({
  bits,
  rank: 4,
  iters,
  quantizer: 'nf',
  blockSize: 64,
});
const RIDGE = 0.01;

const BEATS_PLAIN_LOFTQ =
  "calibrated LoftQ: output error ≤ plain LoftQ's, and the reported errors match an independent computation from X";
test(BEATS_PLAIN_LOFTQ, async () => {
  const backend = await createBackend('wasm');
  const w = weights(ROWS, COLS, 11);
  const x = activations(TOKENS, COLS, 21);
  const g = secondMoment(x, TOKENS, COLS);
  const lambda = (RIDGE * Array.from({ length: COLS }, (_, i) => g[i * COLS + i]).reduce((a, b) => a + b)) / COLS;
  const h = withRidge(g, COLS, lambda);
  const stat: InputStat = { kind: 'full', dim: COLS, count: TOKENS, g };
  const normWS = Math.sqrt(quadratic(w, h, ROWS, COLS));
  for (const bits of [2, 3, 4]) {
    const s = settings(bits, 5);
    const cal = await calibratedLoftqMatrix(w, ROWS, COLS, s, backend, calibrationMetric(stat, RIDGE));
    const plain = await loftqMatrix(w, ROWS, COLS, s, backend);
    const calErr =
      Math.sqrt(quadratic(residualOf(w, cal.q, cal.loraB, cal.loraA, ROWS, COLS, cal.rank), h, ROWS, COLS)) / normWS;
    const plainErr =
      Math.sqrt(quadratic(residualOf(w, plain.q, plain.loraB, plain.loraA, ROWS, COLS, plain.rank), h, ROWS, COLS)) /
      normWS;
    assert.ok(calErr <= plainErr, `nf${bits}: calibrated ${calErr} > plain ${plainErr}`);
    // The kept iterate's reported error is the one its factors give, and it is the lowest.
    const reported = cal.outputRelErrorPerIter[cal.bestIter - 1];
    assert.ok(Math.abs(reported - calErr) <= 1e-4 * calErr, `nf${bits}: reported ${reported}, independent ${calErr}`);
    assert.equal(Math.min(...cal.outputRelErrorPerIter), reported);
    // QLoRA: ‖(W − quantize(W))·S‖ with quantize(W) = the first iteration's Q of plain LoftQ
    // (iteration 1 starts from B·A = 0).
    const q0 = (await loftqMatrix(w, ROWS, COLS, settings(bits, 1), backend)).q;
    const qlora =
      Math.sqrt(
        quadratic(
          w.map((v, i) => v - q0[i]),
          h,
          ROWS,
          COLS,
        ),
      ) / normWS;
    assert.ok(
      Math.abs(cal.qloraOutputRelError - qlora) <= 1e-5 * qlora,
      `nf${bits}: qlora ${cal.qloraOutputRelError} vs ${qlora}`,
    );
    assert.ok(reported < cal.qloraOutputRelError);
    // The weight-space errors are still those of the kept factors.
    const weightErr =
      Math.sqrt(residualOf(w, cal.q, cal.loraB, cal.loraA, ROWS, COLS, cal.rank).reduce((a, v) => a + v * v, 0)) /
      cal.frobeniusNorm;
    assert.ok(Math.abs(cal.relErrorPerIter[cal.bestIter - 1] - weightErr) <= 1e-4 * weightErr);
    console.log(
      `nf${bits}: output error calibrated ${calErr.toFixed(4)} (iter ${cal.bestIter}) ` +
        `vs plain LoftQ ${plainErr.toFixed(4)} vs QLoRA ${qlora.toFixed(4)}`,
    );
  }
});

const IDENTITY_IS_PLAIN =
  'calibrated LoftQ with G = I (full or diagonal) is plain LoftQ: same errors per iteration, same backbone';
test(IDENTITY_IS_PLAIN, async () => {
  const backend = await createBackend('wasm');
  const w = weights(ROWS, COLS, 5);
  const identity = new Float64Array(COLS * COLS).map((_, i) => (i % (COLS + 1) === 0 ? 1 : 0));
  const stats: InputStat[] = [
    { kind: 'full', dim: COLS, count: 1, g: identity },
    { kind: 'diag', dim: COLS, count: 1, d: new Float64Array(COLS).fill(1) },
  ];
  for (const bits of [2, 4]) {
    const s = settings(bits, 4);
    const plain = await loftqMatrix(w, ROWS, COLS, s, backend);
    for (const stat of stats) {
      const cal = await calibratedLoftqMatrix(w, ROWS, COLS, s, backend, calibrationMetric(stat, 0));
      assert.equal(cal.relErrorPerIter.length, plain.relErrorPerIter.length);
      cal.relErrorPerIter.forEach((e, i) =>
        assert.ok(
          Math.abs(e - plain.relErrorPerIter[i]) <= 1e-5 * plain.relErrorPerIter[i],
          `${stat.kind} nf${bits} iter ${i + 1}: ${e} vs ${plain.relErrorPerIter[i]}`,
        ),
      );
      // With S = I the output error is the weight error.
      cal.outputRelErrorPerIter.forEach((e, i) =>
        assert.ok(Math.abs(e - plain.relErrorPerIter[i]) <= 1e-5 * plain.relErrorPerIter[i]),
      );
      assert.ok(
        Math.abs(cal.qloraRelError - plain.qloraRelError) <= 1e-7 &&
          Math.abs(cal.qloraOutputRelError - plain.qloraRelError) <= 1e-6,
      );
      if (cal.bestIter === s.iters) assert.deepEqual(cal.codes, plain.codes);
    }
  }
});

const CLOSED_FORM_OPTIMUM =
  'the closed-form step is the optimum of min ‖(R − L)·S‖ over rank-r L (exact float64 SVD), full and diagonal S';
test(CLOSED_FORM_OPTIMUM, async () => {
  const backend = await createBackend('wasm');
  const w = weights(ROWS, COLS, 8);
  const x = activations(TOKENS, COLS, 9);
  const g = secondMoment(x, TOKENS, COLS);
  const diag = Float64Array.from({ length: COLS }, (_, i) => g[i * COLS + i]);
  const mean = diag.reduce((a, b) => a + b) / COLS;
  const cases: [string, InputStat, Float64Array][] = [
    ['full', { kind: 'full', dim: COLS, count: TOKENS, g }, withRidge(g, COLS, RIDGE * mean)],
    [
      'diag',
      { kind: 'diag', dim: COLS, count: TOKENS, d: diag },
      new Float64Array(COLS * COLS).map((_, i) => (i % (COLS + 1) === 0 ? diag[i / (COLS + 1)] + RIDGE * mean : 0)),
    ],
  ];
  for (const [kind, stat, h] of cases) {
    for (const rank of [1, 4, 9]) {
      // One iteration: Q = quantize(W), then the low-rank step on R = W − Q.
      const cal = await calibratedLoftqMatrix(
        w,
        ROWS,
        COLS,
        { bits: 2, rank, iters: 1, quantizer: 'nf', blockSize: 64 },
        backend,
        calibrationMetric(stat, RIDGE),
      );
      const r = Float64Array.from(w, (v, i) => v - cal.q[i]);
      const optimum = Math.sqrt(optimalTail(r, h, ROWS, COLS, rank));
      const ours = Math.sqrt(quadratic(residualOf(w, cal.q, cal.loraB, cal.loraA, ROWS, COLS, rank), h, ROWS, COLS));
      assert.ok(Math.abs(ours - optimum) <= 2e-4 * optimum, `${kind} r${rank}: ours ${ours}, optimum ${optimum}`);
      assert.ok(Math.abs(cal.outputRelErrorPerIter[0] * cal.outputNorm - optimum) <= 2e-4 * optimum);
    }
  }
});

test('statistics that cannot be a second moment are refused; an all-zero G is the plain objective', () => {
  const x = activations(60, 12, 3);
  const bad = secondMoment(x, 60, 12);
  bad[5 * 12 + 5] = -1;
  assert.throws(() => calibrationMetric({ kind: 'full', dim: 12, count: 60, g: bad }, 0), /diagonal entry 5/);
  assert.throws(
    () => calibrationMetric({ kind: 'diag', dim: 2, count: 1, d: Float64Array.from([1, NaN]) }),
    StatisticsError,
  );
  // An input that was never nonzero: nothing to weight by, H = I.
  const none = calibrationMetric({ kind: 'full', dim: 3, count: 5, g: new Float64Array(9) });
  assert.deepEqual(none, { kind: 'diag', dim: 3, d: Float64Array.from([1, 1, 1]) });
});

/** The held metric's H·b and tr(bᵀ·H·b) against float64 sums, at widths across its bands. */
async function metricProducts(backend: MatmulBackend): Promise<void> {
  const name = backend.name;
  {
    for (const [dim, n] of [
      [1, 1],
      [3, 2],
      [7, 5],
      [67, 9],
      [130, 24],
    ]) {
      const x = activations(2 * dim + 3, dim, 70 + dim);
      const g = secondMoment(x, 2 * dim + 3, dim);
      const mean = Array.from({ length: dim }, (_, i) => g[i * dim + i]).reduce((a, v) => a + v) / dim;
      const h = withRidge(g, dim, RIDGE * mean);
      const b = Float32Array.from(gaussian(dim * n, 90 + dim));
      const held = await holdMetric(calibrationMetric({ kind: 'full', dim, count: 1, g }, RIDGE), backend);
      try {
        const hb = await held.h.times(b, n);
        let worst = 0,
          scale = 0;
        for (let i = 0; i < dim; i++)
          for (let c = 0; c < n; c++) {
            let v = 0,
              mag = 0;
            for (let k = 0; k < dim; k++) {
              v += h[i * dim + k] * b[k * n + c];
              mag += Math.abs(h[i * dim + k] * b[k * n + c]);
            }
            worst = Math.max(worst, Math.abs(hb[i * n + c] - v));
            scale = Math.max(scale, mag);
          }
        assert.ok(worst <= 1e-5 * scale, `${name} ${dim}×${n}: H·b off by ${worst} (scale ${scale})`);
        // tr(bᵀ·H·b) = Σ_c b_cᵀ·H·b_c, the output error's square for b = Xᵀ.
        let want = 0,
          offDiagonal = 0;
        for (let c = 0; c < n; c++)
          for (let i = 0; i < dim; i++) {
            let v = 0;
            for (let k = 0; k < dim; k++) {
              v += h[i * dim + k] * b[k * n + c];
              if (k !== i) offDiagonal += Math.abs(b[i * n + c] * h[i * dim + k] * b[k * n + c]);
            }
            want += b[i * n + c] * v;
          }
        const got = await held.quadratic(b, n);
        const err = Math.abs(got - want);
        if (backend instanceof NativeBackend && backend.bf16) {
          // bf16 products (AVX512-BF16): each off-diagonal term's two factors rounded to 8 bits
          // (≤ 2⁻⁸ of the term), the diagonal exact; at real widths the roundings average out.
          assert.ok(err <= 2 ** -7 * offDiagonal + 1e-5 * want, `${name} ${dim}×${n}: tr(bᵀHb) ${got} vs ${want}`);
          if (dim >= 130) assert.ok(err <= 1e-4 * want, `${name} ${dim}×${n}: bf16 tr(bᵀHb) ${got} vs ${want}`);
        } else assert.ok(err <= 1e-5 * want, `${name} ${dim}×${n}: tr(bᵀHb) ${got} vs ${want}`);
      } finally {
        held.dispose();
      }
    }
  }
}

test('held metric (wasm): H·b and tr(bᵀ·H·b) equal float64 sums with H = G + λI', async () => {
  await metricProducts(await createBackend('wasm'));
});

test('held metric (native): H·b and tr(bᵀ·H·b) equal float64 sums with H = G + λI', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  await metricProducts(await createBackend('native', { threads: 2 }));
});

test("‖W·S‖ given as the calibration pass's tr(W·G·Wᵀ) + λ‖W‖² gives the run that measures it", async () => {
  const backend = await createBackend('wasm');
  const w = weights(ROWS, COLS, 31);
  const x = activations(TOKENS, COLS, 41);
  const g = secondMoment(x, TOKENS, COLS);
  const stat: InputStat = { kind: 'full', dim: COLS, count: TOKENS, g };
  const metric = calibrationMetric(stat, RIDGE);
  assert.ok(metric.kind === 'full');
  // Σ_t ‖W·x_t‖² / N, as the pass sums its outputs: independent of G's product with W.
  let meanSquare = 0;
  for (let t = 0; t < TOKENS; t++)
    for (let r = 0; r < ROWS; r++) {
      let y = 0;
      for (let j = 0; j < COLS; j++) y += w[r * COLS + j] * x[t * COLS + j];
      meanSquare += (y * y) / TOKENS;
    }
  const s = settings(2, 4);
  const measured = await calibratedLoftqMatrix(w, ROWS, COLS, s, backend, metric);
  const given = await calibratedLoftqMatrix(w, ROWS, COLS, s, backend, metric, {
    knownOutput: { meanSquare, lambda: metric.lambda },
  });
  const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) <= 1e-5 * b, `${what}: ${a} vs ${b}`);
  close(given.outputNorm, measured.outputNorm, '‖W·S‖');
  close(given.qloraOutputRelError, measured.qloraOutputRelError, 'QLoRA output error');
  given.outputRelErrorPerIter.forEach((e, k) => close(e, measured.outputRelErrorPerIter[k], `iteration ${k + 1}`));
  // Only the norm changed hands: the same iterate, factors and weight errors.
  assert.equal(given.bestIter, measured.bestIter);
  assert.deepEqual(given.relErrorPerIter, measured.relErrorPerIter);
  assert.deepEqual(given.loraA, measured.loraA);
  // A wrong number shows: ‖W·S‖ follows what it is given (no silent fallback to a measure).
  const off = await calibratedLoftqMatrix(w, ROWS, COLS, s, backend, metric, {
    knownOutput: { meanSquare: 4 * meanSquare, lambda: 4 * metric.lambda },
  });
  close(off.outputNorm, 2 * measured.outputNorm, '‖W·S‖ of a 4× statistic');
});
