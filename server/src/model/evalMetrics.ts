// Output-space fidelity of a quantized model against the original, in the spirit of llama.cpp's
// `llama-perplexity --kl-divergence`: per position, KL(original ‖ variant) in nats and whether the
// top-1 token agrees; per sequence, the negative log-likelihood of each next token (perplexity).
// Log-softmax is taken in float64 so that float32 logits of a vocabulary of 150k entries do not
// lose the small probabilities that KL weighs.
//
// Which positions count: KL and top-1 use every position (each is an output of the model); the
// perplexity uses positions 0..len-2, the ones that have a next token to predict.

import type { ModelSideEval } from '../protocol/lsp_ext';

/** out[i] = x[i] − log Σ exp(x), computed in float64 with the max shifted out. */
export function logSoftmax(x: ArrayLike<number>, out: Float64Array = new Float64Array(x.length)): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i] > max) max = x[i];
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += Math.exp(x[i] - max);
  const lse = max + Math.log(sum);
  for (let i = 0; i < x.length; i++) out[i] = x[i] - lse;
  return out;
}

/** First index of the largest value. */
export function argmax(x: ArrayLike<number>, from = 0, to = x.length): number {
  let best = from;
  for (let i = from + 1; i < to; i++) if (x[i] > x[best]) best = i;
  return best - from;
}

/** KL(p ‖ q) = Σ p·(log p − log q) from two log-probability rows. */
export function klFromLogProbs(lp: Float64Array, lq: Float64Array): number {
  let kl = 0;
  for (let i = 0; i < lp.length; i++) {
    const p = Math.exp(lp[i]);
    if (p > 0) kl += p * (lp[i] - lq[i]);
  }
  // KL ≥ 0; rounding can leave −1e-17 on identical rows, which would read as "better than itself".
  return Math.max(0, kl);
}

/** The q-th quantile (0..1) with linear interpolation between order statistics (numpy's default). */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  const pos = q * (n - 1);
  const lo = Math.floor(pos),
    hi = Math.min(n - 1, lo + 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/** Mean negative log-likelihood of next tokens; ppl = exp(mean). */
export class PerplexityMeter {
  private nll = 0;
  private count = 0;
  private readonly row: Float64Array;

  constructor(private readonly vocab: number) {
    this.row = new Float64Array(vocab);
  }

  /** logits: len × vocab row-major for the sequence `ids` (length len). */
  addSequence(ids: readonly number[], logits: ArrayLike<number>, len = ids.length): void {
    for (let i = 0; i + 1 < len; i++) {
      logSoftmax(rowOf(logits, i, this.vocab), this.row);
      this.nll -= this.row[ids[i + 1]];
      this.count++;
    }
  }

  get predictions(): number {
    return this.count;
  }

  meanNll(): number {
    return this.count ? this.nll / this.count : NaN;
  }

  ppl(): number {
    return Math.exp(this.meanNll());
  }
}

/** Compares a variant's logits with the original's, position by position, and its perplexity. */
export class ComparisonMeter {
  private kls: Float64Array;
  private n = 0;
  private klSum = 0;
  private sameTop1 = 0;
  private readonly lp: Float64Array;
  private readonly lq: Float64Array;
  readonly perplexity: PerplexityMeter;

  constructor(private readonly vocab: number) {
    this.lp = new Float64Array(vocab);
    this.lq = new Float64Array(vocab);
    this.kls = new Float64Array(256);
    this.perplexity = new PerplexityMeter(vocab);
  }

  /** original and variant: len × vocab logits of the same sequence `ids`. */
  addSequence(ids: readonly number[], original: ArrayLike<number>, variant: ArrayLike<number>, len = ids.length): void {
    const V = this.vocab;
    if (original.length < len * V || variant.length < len * V) {
      throw new RangeError(`logits hold ${Math.min(original.length, variant.length)} values, ${len}×${V} expected`);
    }
    for (let i = 0; i < len; i++) {
      const o = rowOf(original, i, V),
        v = rowOf(variant, i, V);
      logSoftmax(o, this.lp);
      logSoftmax(v, this.lq);
      this.push(klFromLogProbs(this.lp, this.lq));
      if (argmax(o) === argmax(v)) this.sameTop1++;
    }
    this.perplexity.addSequence(ids, variant, len);
  }

  private push(kl: number): void {
    if (this.n === this.kls.length) {
      const grown = new Float64Array(this.kls.length * 2);
      grown.set(this.kls);
      this.kls = grown;
    }
    this.kls[this.n++] = kl;
    this.klSum += kl;
  }

  get positions(): number {
    return this.n;
  }

  /** The summary; `originalPpl` is the original model's perplexity on the same tokens. */
  summary(originalPpl: number): ModelSideEval {
    const sorted = this.kls.slice(0, this.n).sort();
    const ppl = this.perplexity.ppl();
    return {
      kl: this.n ? this.klSum / this.n : NaN,
      klMedian: quantile(sorted, 0.5),
      klP99: quantile(sorted, 0.99),
      top1: this.n ? (100 * this.sameTop1) / this.n : NaN,
      ppl,
      lnPplRatio: Math.log(ppl / originalPpl),
    };
  }
}

/** Row i of a row-major matrix with `cols` columns, without copying typed arrays. */
function rowOf(m: ArrayLike<number>, i: number, cols: number): ArrayLike<number> {
  const typed = m as Float32Array;
  if (typeof typed.subarray === 'function') return typed.subarray(i * cols, (i + 1) * cols);
  return Array.prototype.slice.call(m, i * cols, (i + 1) * cols) as number[];
}
