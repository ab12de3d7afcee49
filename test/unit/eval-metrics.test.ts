// Model-level metrics (model/evalMetrics.ts) against expectations computed here another way:
// softmax by direct exponentials and KL as Σ p·ln(p/q) on random logits, closed forms (Bernoulli
// KL, uniform perplexity = vocabulary size), order statistics of known lists, and invariances
// (a constant added to a row changes no probability).

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ComparisonMeter, logSoftmax, PerplexityMeter, quantile } from '../../server/src/model/evalMetrics';
import { randomWeights } from '../model-reference';

/** Softmax without the max shift (fine for the |logit| ≤ 4 used here), in plain numbers. */
function softmax(row: ArrayLike<number>): number[] {
  const e = Array.from(row, (x) => Math.exp(x));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
}

function independent(seqs: number[][], orig: Float32Array[], vari: Float32Array[], V: number) {
  const kls: number[] = [];
  let same = 0,
    nllO = 0,
    nllV = 0,
    preds = 0;
  seqs.forEach((ids, k) => {
    for (let i = 0; i < ids.length; i++) {
      const p = softmax(orig[k].subarray(i * V, (i + 1) * V)),
        q = softmax(vari[k].subarray(i * V, (i + 1) * V));
      kls.push(p.reduce((a, pi, j) => a + pi * Math.log(pi / q[j]), 0));
      const top = (r: number[]) => r.indexOf(Math.max(...r));
      if (top(p) === top(q)) same++;
      if (i + 1 < ids.length) {
        nllO -= Math.log(p[ids[i + 1]]);
        nllV -= Math.log(q[ids[i + 1]]);
        preds++;
      }
    }
  });
  const sorted = [...kls].sort((a, b) => a - b);
  const h = sorted.length / 2;
  const mid = sorted.length % 2 ? sorted[Math.floor(h)] : (sorted[h - 1] + sorted[h]) / 2;
  return {
    kl: kls.reduce((a, b) => a + b, 0) / kls.length,
    median: mid,
    top1: (100 * same) / kls.length,
    pplO: Math.exp(nllO / preds),
    pplV: Math.exp(nllV / preds),
    kls: sorted,
  };
}

test('KL, top-1, perplexity and ln(PPL ratio) match a direct computation on random logits', () => {
  const V = 37;
  const seqs = [
    [1, 5, 36, 0, 2, 2, 9],
    [4, 3],
    [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18],
  ];
  let seed = 11;
  const orig = seqs.map((s) => randomWeights(s.length * V, seed++, 4));
  // The variant is the original plus noise of growing size, so KL varies across positions.
  const vari = orig.map((o, k) => {
    const n = randomWeights(o.length, 100 + k, 1.5);
    return o.map((x, i) => x + n[i] * ((i % 5) / 4));
  });
  const ref = independent(seqs, orig, vari, V);
  const m = new ComparisonMeter(V),
    po = new PerplexityMeter(V);
  seqs.forEach((ids, k) => {
    m.addSequence(ids, orig[k], vari[k]);
    po.addSequence(ids, orig[k]);
  });
  const s = m.summary(po.ppl());
  const close = (a: number, b: number, what: string) =>
    assert.ok(Math.abs(a - b) <= 1e-12 * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);
  close(s.kl, ref.kl, 'mean KL');
  close(s.klMedian, ref.median, 'median KL');
  // numpy's linear-interpolation 99th percentile of 21 values: position 0.99·20 = 19.8.
  close(s.klP99, ref.kls[19] + 0.8 * (ref.kls[20] - ref.kls[19]), 'p99 KL');
  close(s.top1, ref.top1, 'top-1 %');
  close(po.ppl(), ref.pplO, 'original ppl');
  close(s.ppl, ref.pplV, 'variant ppl');
  close(s.lnPplRatio, Math.log(ref.pplV / ref.pplO), 'ln ratio');
  assert.ok(s.kl > 0.01 && s.top1 < 100 && s.top1 > 0, `the case is not degenerate: ${JSON.stringify(s)}`);
  assert.equal(m.positions, 21);
  assert.equal(po.predictions, 18);
});

test('a model against itself (and against logits shifted by a constant per row): KL 0, top-1 100 %, ratio 0', () => {
  const V = 50;
  const ids = [3, 1, 4, 1, 5, 9, 2, 6];
  const o = randomWeights(ids.length * V, 3, 6);
  const shifted = Float64Array.from(o, (x, i) => x + 1000 * Math.floor(i / V)); // row i gets +1000·i
  for (const v of [o, shifted]) {
    const m = new ComparisonMeter(V),
      p = new PerplexityMeter(V);
    m.addSequence(ids, o, v);
    p.addSequence(ids, o);
    const s = m.summary(p.ppl());
    assert.ok(s.kl < 1e-9 && s.klP99 < 1e-9 && s.klMedian >= 0, `KL ${s.kl} p99 ${s.klP99}`);
    assert.equal(s.top1, 100);
    assert.ok(Math.abs(s.lnPplRatio) < 1e-9, `ln ratio ${s.lnPplRatio}`);
  }
});

test('closed forms: Bernoulli KL, uniform logits have perplexity = vocabulary size', () => {
  // Two tokens with logits (a, 0) → p = σ(a); KL(σ(a)‖σ(b)) in closed form.
  const sig = (x: number) => 1 / (1 + Math.exp(-x));
  const a = 1.3,
    b = -0.4,
    p = sig(a),
    q = sig(b);
  const m = new ComparisonMeter(2);
  m.addSequence([0], [a, 0], [b, 0]);
  const s = m.summary(1);
  assert.ok(Math.abs(s.kl - (p * Math.log(p / q) + (1 - p) * Math.log((1 - p) / (1 - q)))) < 1e-15);
  assert.equal(s.top1, 0);
  const V = 1000,
    ids = [1, 2, 3, 4];
  const u = new PerplexityMeter(V);
  u.addSequence(ids, new Float32Array(ids.length * V).fill(7.5));
  assert.ok(Math.abs(u.ppl() - V) < 1e-9, `uniform ppl ${u.ppl()}`);
});

test('log-softmax stays finite for logits of ±1e4 and its exponentials sum to 1', () => {
  const l = logSoftmax([1e4, -1e4, 9999, 0]);
  assert.ok(l.every((x) => Number.isFinite(x) || x === -Infinity));
  const z = l.reduce((acc, x) => acc + Math.exp(x), 0);
  // x − lse at |x| = 1e4 keeps about 1e4·2⁻⁵² ≈ 2e-12 absolute accuracy.
  assert.ok(Math.abs(z - 1) < 1e-11 && Math.abs(l[0] + Math.log1p(Math.exp(-1))) < 1e-11, `${z} ${l[0]}`);
});

test('quantile: order statistics of known lists', () => {
  const hundredOne = Array.from({ length: 101 }, (_, i) => i + 1);
  assert.equal(quantile(hundredOne, 0.99), 100);
  assert.equal(quantile(hundredOne, 0.5), 51);
  assert.equal(quantile([1, 2, 3, 10], 0.5), 2.5);
  assert.equal(quantile([4], 0.99), 4);
  assert.ok(Number.isNaN(quantile([], 0.5)));
});

test('logits shorter than the sequence are refused', () => {
  const m = new ComparisonMeter(4);
  assert.throws(() => m.addSequence([1, 2], new Float32Array(8), new Float32Array(4)), /8|4×4|2×4/);
});
