// The synthetic LLM-like matrices: deterministic for a seed, and with the traits they are
// meant to have (heavy tails, a decaying spectrum on top of the bulk, outlier input
// columns), checked by statistics with wide margins.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_TRAITS, Rng, llmLike, orthonormalRows, seedFrom, spikeValues } from '../../server/src/tools/synth';
import { moments, singularValues } from './synth-stats';

test('Rng: the same seed gives the same stream, uniform and normal have the right moments', () => {
  const a = new Rng(7),
    b = new Rng(7),
    c = new Rng(8);
  const sa = Array.from({ length: 8 }, () => a.nextU32());
  assert.deepEqual(
    sa,
    Array.from({ length: 8 }, () => b.nextU32()),
  );
  assert.notDeepEqual(
    sa,
    Array.from({ length: 8 }, () => c.nextU32()),
  );
  const n = 200_000;
  const u = new Float32Array(n),
    z = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    u[i] = a.uniform();
    z[i] = a.normal();
  }
  const mu = moments(u),
    mz = moments(z);
  assert.ok(Math.abs(mu.mean - 0.5) < 0.005 && Math.abs(mu.std - Math.sqrt(1 / 12)) < 0.005, JSON.stringify(mu));
  assert.ok(u.every((v) => v > 0 && v < 1));
  assert.ok(
    Math.abs(mz.mean) < 0.01 && Math.abs(mz.std - 1) < 0.01 && Math.abs(mz.kurtosis - 3) < 0.1,
    JSON.stringify(mz),
  );
});

test('seedFrom separates tensor names and seeds', () => {
  const names = [
    'model.layers.0.mlp.up_proj.weight',
    'model.layers.0.mlp.gate_proj.weight',
    'model.layers.1.mlp.up_proj.weight',
  ];
  const seeds = new Set([0, 1].flatMap((s) => names.map((n) => seedFrom(s, n))));
  assert.equal(seeds.size, 6);
  assert.equal(seedFrom(3, 'x'), seedFrom(3, 'x'));
});

test('llmLike is deterministic for a seed and differs across seeds', () => {
  const a = llmLike(64, 128, 11),
    b = llmLike(64, 128, 11),
    c = llmLike(64, 128, 12);
  assert.deepEqual(a, b);
  assert.ok(a.some((v, i) => v !== c[i]));
});

test('the bulk is Student-t: unit-scaled variance, heavy tails (kurtosis and tail mass well above Gaussian)', () => {
  const w = llmLike(512, 512, 3, { spikeRank: 0, outliers: 0, df: 5 });
  const m = moments(w);
  assert.ok(Math.abs(m.std / DEFAULT_TRAITS.scale - 1) < 0.05, `std ${m.std}`);
  // t(5) kurtosis is 9 in theory (sample estimates run lower); a Gaussian's is 3.
  assert.ok(m.kurtosis > 5, `kurtosis ${m.kurtosis}`);
  let beyond = 0;
  for (const v of w) if (Math.abs(v) > 4 * m.std) beyond++;
  // P(|x| > 4σ): Gaussian 6.3e-5 (≈17 of 262144), t(5) ≈ 3.6e-3 (≈950).
  assert.ok(beyond > 400, `${beyond} values beyond 4σ`);
});

test('orthonormalRows gives orthonormal vectors', () => {
  const k = 6,
    n = 300;
  const q = orthonormalRows(new Rng(5), k, n);
  for (let i = 0; i < k; i++)
    for (let j = 0; j <= i; j++) {
      let d = 0;
      for (let t = 0; t < n; t++) d += q[i * n + t] * q[j * n + t];
      assert.ok(Math.abs(d - (i === j ? 1 : 0)) < 1e-12, `<q${i}, q${j}> = ${d}`);
    }
});

test('the spike puts decaying singular values above the bulk', () => {
  const rows = 96,
    cols = 192;
  const plain = singularValues(llmLike(rows, cols, 4, { spikeRank: 0, outliers: 0 }), rows, cols);
  const spiked = singularValues(llmLike(rows, cols, 4, { outliers: 0, spikeGain: 3 }), rows, cols);
  const s = spikeValues(rows, cols, { ...DEFAULT_TRAITS, spikeGain: 3 });
  // Without a spike the spectrum is flat-ish (Marchenko–Pastur edge ≈ σ(√m+√n)).
  assert.ok(plain[0] / plain[7] < 1.5, `plain σ1/σ8 = ${plain[0] / plain[7]}`);
  // With it, the top values track the planted ones and decay.
  assert.ok(spiked[0] > 2 * plain[0], `σ1 ${spiked[0]} vs bulk ${plain[0]}`);
  assert.ok(Math.abs(spiked[0] / s[0] - 1) < 0.15, `σ1 ${spiked[0]} vs planted ${s[0]}`);
  assert.ok(spiked[0] / spiked[7] > 2, `spiked σ1/σ8 = ${spiked[0] / spiked[7]}`);
  for (let i = 0; i < 7; i++) assert.ok(spiked[i] > spiked[i + 1]);
});

test('outlier input columns: exactly `outliers` columns stand out by their norm', () => {
  const rows = 128,
    cols = 256;
  const w = llmLike(rows, cols, 9, { outliers: 5, outlierGain: [4, 12] });
  const norms = Array.from({ length: cols }, (_, c) => {
    let s = 0;
    for (let r = 0; r < rows; r++) s += w[r * cols + c] ** 2;
    return Math.sqrt(s);
  }).sort((a, b) => b - a);
  const median = norms[cols >> 1];
  assert.ok(norms[4] > 3 * median, `5th largest column norm ${norms[4]} vs median ${median}`);
  assert.ok(norms[5] < 2 * median, `6th largest column norm ${norms[5]} vs median ${median}`);
});

test('llmLike refuses an infinite-variance bulk', () => {
  assert.throws(() => llmLike(4, 4, 1, { df: 2 }), /df must be > 2/);
});
