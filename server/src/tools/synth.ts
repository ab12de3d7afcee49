// Deterministic LLM-like weight matrices for the bench and the checkpoint generator: a
// Student-t bulk (heavy tails), a decaying low-rank spectrum on top, and a few outlier input
// columns — the traits that make quantization error uneven across layers and that LoftQ's
// low-rank part can absorb. Same traits as ../shared/tools/synth.py, not the same numbers.

export interface SynthTraits {
  /** Student-t degrees of freedom of the bulk (> 2; lower = heavier tails). */
  df: number;
  /** Rank of the spiked part. */
  spikeRank: number;
  /** Singular value i (1-based) of the spike is proportional to i^-decay. */
  decay: number;
  /** Spike strength relative to synth.py's (scale · √max(m,n) · 1.5). */
  spikeGain: number;
  /** Number of outlier input columns, and the range their values are multiplied by. */
  outliers: number;
  outlierGain: [number, number];
  /** Standard deviation of the bulk. */
  scale: number;
}

export const DEFAULT_TRAITS: SynthTraits = {
  df: 5,
  spikeRank: 32,
  decay: 0.7,
  spikeGain: 1,
  outliers: 4,
  outlierGain: [4, 12],
  scale: 0.02,
};

/** A 32-bit seed from any mix of strings and numbers (FNV-1a, then a final avalanche). */
export function seedFrom(...parts: (string | number)[]): number {
  let h = 0x811c9dc5;
  for (const p of parts) {
    const s = `${p}\u0000`;
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  return (h ^ (h >>> 16)) >>> 0;
}

/** xoshiro128** seeded through splitmix32: fast, and the same stream on every platform. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spare: number | undefined;

  constructor(seed: number) {
    let x = seed >>> 0;
    const mix = () => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = mix();
    this.b = mix();
    this.c = mix();
    this.d = mix();
  }

  nextU32(): number {
    const r = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return r;
  }

  /** Uniform in (0, 1), never 0 or 1. */
  uniform(): number {
    return ((this.nextU32() >>> 8) + 0.5) * 2 ** -24;
  }

  /** Standard normal (Marsaglia's polar method). */
  normal(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    for (;;) {
      const u = 2 * this.uniform() - 1,
        v = 2 * this.uniform() - 1,
        w = u * u + v * v;
      if (w < 1) {
        const f = Math.sqrt((-2 * Math.log(w)) / w);
        this.spare = v * f;
        return u * f;
      }
    }
  }

  /**
   * Fills out with scale × Student t(df) draws by Bailey's polar method. The generator is
   * inlined with local state (the bulk of a 7B model is 6.5e9 draws; this runs ~3× faster
   * than calling nextU32), and consumes the same stream as nextU32 would.
   */
  fillStudentT(out: Float32Array, df: number, scale: number): void {
    let a = this.a,
      b = this.b,
      c = this.c,
      d = this.d;
    const e = -2 / df;
    const n = out.length;
    let i = 0;
    while (i < n) {
      let r = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0;
      let t = b << 9;
      c ^= a;
      d ^= b;
      b ^= c;
      a ^= d;
      c ^= t;
      d = rotl(d, 11);
      const u = ((r >>> 8) + 0.5) * 2 ** -23 - 1;
      r = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0;
      t = b << 9;
      c ^= a;
      d ^= b;
      b ^= c;
      a ^= d;
      c ^= t;
      d = rotl(d, 11);
      const v = ((r >>> 8) + 0.5) * 2 ** -23 - 1;
      const w = u * u + v * v;
      if (w >= 1) continue;
      out[i++] = scale * u * Math.sqrt((df * (Math.exp(Math.log(w) * e) - 1)) / w);
    }
    this.a = a;
    this.b = b;
    this.c = c;
    this.d = d;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** k orthonormal vectors of length n (rows of a k×n array), by modified Gram-Schmidt in float64. */
export function orthonormalRows(rng: Rng, k: number, n: number): Float64Array {
  const q = new Float64Array(k * n);
  for (let i = 0; i < k; i++) {
    const row = q.subarray(i * n, (i + 1) * n);
    for (let j = 0; j < n; j++) row[j] = rng.normal();
    for (let p = 0; p < i; p++) {
      const prev = q.subarray(p * n, (p + 1) * n);
      let dot = 0;
      for (let j = 0; j < n; j++) dot += row[j] * prev[j];
      for (let j = 0; j < n; j++) row[j] -= dot * prev[j];
    }
    let norm = 0;
    for (let j = 0; j < n; j++) norm += row[j] * row[j];
    norm = Math.sqrt(norm);
    for (let j = 0; j < n; j++) row[j] /= norm;
  }
  return q;
}

/** Singular values of the spike, largest first. */
export function spikeValues(rows: number, cols: number, t: SynthTraits): Float64Array {
  const k = Math.min(t.spikeRank, rows, cols);
  const s = new Float64Array(k);
  for (let i = 0; i < k; i++)
    s[i] = t.spikeGain * t.scale * Math.sqrt(Math.max(rows, cols)) * 1.5 * (i + 1) ** -t.decay;
  return s;
}

/** w[base..base+cols) += Σ_p us[ui+p] · vt[p, :]; four rank terms per pass over the row. */
function addRowSpike(
  w: Float32Array,
  base: number,
  us: Float64Array,
  ui: number,
  vt: Float32Array,
  k: number,
  cols: number,
): void {
  let p = 0;
  for (; p + 4 <= k; p += 4) {
    const a0 = us[ui + p],
      a1 = us[ui + p + 1],
      a2 = us[ui + p + 2],
      a3 = us[ui + p + 3];
    const o0 = p * cols,
      o1 = o0 + cols,
      o2 = o1 + cols,
      o3 = o2 + cols;
    for (let j = 0; j < cols; j++) w[base + j] += a0 * vt[o0 + j] + a1 * vt[o1 + j] + a2 * vt[o2 + j] + a3 * vt[o3 + j];
  }
  for (; p < k; p++) {
    const a = us[ui + p],
      o = p * cols;
    for (let j = 0; j < cols; j++) w[base + j] += a * vt[o + j];
  }
}

/** A rows×cols (out × in) float32 matrix, row-major, fully determined by seed and traits. */
export function llmLike(rows: number, cols: number, seed: number, traits: Partial<SynthTraits> = {}): Float32Array {
  const t: SynthTraits = { ...DEFAULT_TRAITS, ...traits };
  if (!(t.df > 2)) throw new Error(`synth: df must be > 2 (finite variance), got ${t.df}`);
  const rng = new Rng(seed);
  const w = new Float32Array(rows * cols);
  const bulk = t.scale / Math.sqrt(t.df / (t.df - 2));
  rng.fillStudentT(w, t.df, bulk);

  const s = spikeValues(rows, cols, t);
  const k = s.length;
  if (k > 0) {
    const u = orthonormalRows(rng, k, rows);
    const v = orthonormalRows(rng, k, cols);
    const vt = new Float32Array(v);
    const us = new Float64Array(rows * k);
    for (let p = 0; p < k; p++) for (let i = 0; i < rows; i++) us[i * k + p] = u[p * rows + i] * s[p];
    for (let i = 0; i < rows; i++) addRowSpike(w, i * cols, us, i * k, vt, k, cols);
  }

  const count = Math.min(t.outliers, cols);
  const picked = new Set<number>();
  while (picked.size < count) picked.add(rng.nextU32() % cols);
  for (const c of [...picked].sort((x, y) => x - y)) {
    const g = t.outlierGain[0] + (t.outlierGain[1] - t.outlierGain[0]) * rng.uniform();
    for (let i = 0; i < rows; i++) w[i * cols + c] *= g;
  }
  return w;
}
