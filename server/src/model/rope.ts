// Rotary position embeddings as transformers 4.49 computes them (modeling_rope_utils.py), in
// float32 where it computes in float32: the inverse frequencies of rope_scaling's types
// 'default', 'linear', 'dynamic' (NTK, at the lengths used), 'yarn' and 'llama3' (Llama 3.x),
// each over the rotary part of a head (partial_rotary_factor), and the cos/sin tables the
// forward pass reads by row. Any other rope_scaling — another type, or a key that changes the
// frequencies and is not read here — is refused in one line naming config.json and the field.

import { brief, quote } from '../checkpoint/errors';
import type { ConfigFields, Json } from './arch/fields';

export const ROPE_TYPES = ['default', 'linear', 'dynamic', 'yarn', 'llama3'] as const;
export type RopeType = (typeof ROPE_TYPES)[number];

export interface RopeSpec {
  theta: number;
  /** Dimensions rotated per head: head_dim · partial_rotary_factor (even). */
  rotaryDim: number;
  type: RopeType;
  /** rope_scaling.factor (1 for 'default'). */
  factor: number;
  /** max_position_embeddings ('dynamic': the length past which the base grows; 'yarn': the
   *  correction range). */
  maxPositions?: number;
  /** 'llama3'. */
  lowFreqFactor?: number;
  highFreqFactor?: number;
  originalMaxPositions?: number;
  /** 'yarn'. */
  betaFast?: number;
  betaSlow?: number;
  /** 'yarn': cos and sin are multiplied by this (attention_factor, or 0.1·ln(factor) + 1). */
  attentionFactor?: number;
}

/** rope_scaling's keys each type reads (besides rope_type/type and factor). */
const KEYS: Record<RopeType, readonly string[]> = {
  default: [],
  linear: [],
  dynamic: ['original_max_position_embeddings'],
  yarn: ['attention_factor', 'beta_fast', 'beta_slow', 'original_max_position_embeddings'],
  llama3: ['low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'],
};

/** Reads rope_theta and rope_scaling (the caller has checked rotaryDim is even). */
export function parseRope(f: ConfigFields, rotaryDim: number): RopeSpec {
  const theta = f.positiveNumber('rope_theta', 10000);
  // Below 1 the frequencies θ^(−2j/d) grow instead of decaying, and 1e-300 made them infinite in
  // float32 (NaN logits, a perplexity of NaN beside "KL 0, top-1 100 %"). Real models use 1e4–1e7.
  if (theta < 1) f.fail(`field 'rope_theta' must be a number ≥ 1 (found ${theta})`);
  const rs = f.json.rope_scaling;
  if (rs === undefined || rs === null) return { theta, rotaryDim, type: 'default', factor: 1 };
  const supported = `supported: ${ROPE_TYPES.join(', ')}`;
  if (typeof rs !== 'object' || Array.isArray(rs))
    f.fail(`field 'rope_scaling' must be an object or null (found ${brief(rs)}; ${supported})`);
  const s = rs as Json;
  const t = s.rope_type ?? s.type;
  if (typeof t !== 'string') f.fail(`field 'rope_scaling' has no rope_type (${supported})`);
  if (!(ROPE_TYPES as readonly string[]).includes(t))
    f.fail(
      `field 'rope_scaling' has rope_type '${quote(t)}', which the forward pass does not implement (${supported})`,
    );
  const type = t as RopeType;
  const reads = ['rope_type', 'type', 'factor', ...KEYS[type]];
  for (const k of Object.keys(s)) {
    if (!reads.includes(k) && s[k] !== null)
      f.fail(
        `field 'rope_scaling' has '${quote(k)}', which the forward pass does not implement for rope_type '${type}' ` +
          `(it reads ${reads.join(', ')})`,
      );
  }
  const num = (key: string, fallback?: number): number => {
    const v = s[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
      f.fail(`field 'rope_scaling' needs '${key}' as a positive number (found ${brief(v)})`);
    return v;
  };
  if (type === 'default') return { theta, rotaryDim, type, factor: 1 };
  const factor = num('factor');
  if (type === 'linear') return { theta, rotaryDim, type, factor };
  if (type === 'llama3') {
    const lowFreqFactor = num('low_freq_factor'),
      highFreqFactor = num('high_freq_factor');
    if (!(highFreqFactor > lowFreqFactor))
      f.fail(
        `field 'rope_scaling' needs high_freq_factor > low_freq_factor (found ${highFreqFactor}, ${lowFreqFactor})`,
      );
    return {
      theta,
      rotaryDim,
      type,
      factor,
      lowFreqFactor,
      highFreqFactor,
      originalMaxPositions: num('original_max_position_embeddings'),
    };
  }
  // dynamic and yarn scale from max_position_embeddings (transformers 4.49). A different
  // rope_scaling.original_max_position_embeddings is read differently by later transformers
  // (the ratio of the two replaces the factor): refused rather than guessed.
  const maxPositions = f.positiveInt('max_position_embeddings');
  const orig = s.original_max_position_embeddings;
  if (orig !== undefined && orig !== null && orig !== maxPositions)
    f.fail(
      `field 'rope_scaling' has original_max_position_embeddings ${brief(orig)} ≠ max_position_embeddings ` +
        `${maxPositions}, which the forward pass does not implement for rope_type '${type}' (transformers versions ` +
        'disagree on it; set them equal or remove it)',
    );
  if (type === 'dynamic') return { theta, rotaryDim, type, factor, maxPositions };
  return {
    theta,
    rotaryDim,
    type,
    factor,
    maxPositions,
    betaFast: num('beta_fast', 32),
    betaSlow: num('beta_slow', 1),
    attentionFactor: s.attention_factor == null ? 0.1 * Math.log(factor) + 1 : num('attention_factor'),
  };
}

const f32 = Math.fround;

/** transformers' default inverse frequencies 1/θ^(2j/d), j < d/2, in float32. */
function defaultInvFreq(theta: number, dim: number): Float64Array {
  const half = dim / 2;
  const inv = new Float64Array(half);
  for (let j = 0; j < half; j++) inv[j] = f32(1 / Math.pow(theta, f32((2 * j) / dim)));
  return inv;
}

/** The inverse frequencies of `spec` for a sequence of `seqLen` tokens ('dynamic' only reads it). */
export function inverseFrequencies(spec: RopeSpec, seqLen = 0): Float64Array {
  const dim = spec.rotaryDim;
  switch (spec.type) {
    case 'default':
      return defaultInvFreq(spec.theta, dim);
    case 'linear':
      return defaultInvFreq(spec.theta, dim).map((v) => f32(v / spec.factor));
    case 'dynamic': {
      // _compute_dynamic_ntk_parameters: the base grows once the sequence is longer than max_position_embeddings.
      const mp = spec.maxPositions!;
      const len = seqLen > mp ? seqLen : mp;
      const base = spec.theta * Math.pow((spec.factor * len) / mp - (spec.factor - 1), dim / (dim - 2));
      return defaultInvFreq(base, dim);
    }
    case 'llama3': {
      const inv = defaultInvFreq(spec.theta, dim);
      const old = spec.originalMaxPositions!,
        lo = spec.lowFreqFactor!,
        hi = spec.highFreqFactor!;
      const lowWavelen = old / lo,
        highWavelen = old / hi;
      return inv.map((v) => {
        const wavelen = f32(f32(1 / v) * 2 * Math.PI);
        const scaled = wavelen > lowWavelen ? f32(v / spec.factor) : v;
        if (wavelen < highWavelen || wavelen > lowWavelen) return scaled;
        const smooth = f32((f32(old / wavelen) - lo) / (hi - lo));
        return f32(f32(f32((1 - smooth) * scaled) / spec.factor) + f32(smooth * scaled));
      });
    }
    case 'yarn': {
      const mp = spec.maxPositions!;
      const correctionDim = (rotations: number) =>
        (dim * Math.log(mp / (rotations * 2 * Math.PI))) / (2 * Math.log(spec.theta));
      const low = Math.max(Math.floor(correctionDim(spec.betaFast!)), 0);
      let high = Math.min(Math.ceil(correctionDim(spec.betaSlow!)), dim - 1);
      if (low === high) high += 0.001;
      const inv = new Float64Array(dim / 2);
      for (let j = 0; j < dim / 2; j++) {
        const pos = f32(Math.pow(spec.theta, f32((2 * j) / dim)));
        const extrapolation = f32(1 / pos),
          interpolation = f32(1 / f32(spec.factor * pos));
        const ramp = Math.min(1, Math.max(0, f32((j - low) / (high - low))));
        const keep = f32(1 - ramp);
        inv[j] = f32(f32(interpolation * f32(1 - keep)) + f32(extrapolation * keep));
      }
      return inv;
    }
  }
}

/** cos/sin [row, rotaryDim/2]: row r holds position posOf(r)'s angles. */
export interface RopeTables {
  cos: Float64Array;
  sin: Float64Array;
  /** rotaryDim / 2. */
  half: number;
}

function fillRows(
  t: RopeTables,
  row0: number,
  rows: number,
  position0: number,
  inv: Float64Array,
  scale: number,
): void {
  const half = t.half;
  for (let r = 0; r < rows; r++) {
    const p = position0 + r,
      o = (row0 + r) * half;
    for (let j = 0; j < half; j++) {
      // transformers: position · inv_freq in float32, cos/sin of that, times the attention factor.
      const a = f32(p * inv[j]);
      t.cos[o + j] = Math.cos(a) * scale;
      t.sin[o + j] = Math.sin(a) * scale;
    }
  }
}

function newTables(rows: number, half: number): RopeTables {
  return { cos: new Float64Array(rows * half), sin: new Float64Array(rows * half), half };
}

/** Tables for a pass over sequences of these lengths, and the row each sequence's position 0
 *  reads (position i reads rowStart + i). One block for every sequence, except that 'dynamic'
 *  gives each sequence longer than max_position_embeddings a block of its own (its frequencies
 *  depend on its length: the sequence as transformers runs it alone). */
export function ropeForSequences(
  spec: RopeSpec,
  lengths: readonly number[],
): { tables: RopeTables; rowStart: number[] } {
  const half = spec.rotaryDim / 2;
  const scale = spec.attentionFactor ?? 1;
  const maxLen = lengths.reduce((a, b) => Math.max(a, b), 0);
  if (spec.type !== 'dynamic' || maxLen <= spec.maxPositions!) {
    const tables = newTables(maxLen, half);
    fillRows(tables, 0, maxLen, 0, inverseFrequencies(spec), scale);
    return { tables, rowStart: lengths.map(() => 0) };
  }
  const mp = spec.maxPositions!;
  const shared = Math.min(maxLen, mp);
  const rowStart: number[] = [];
  let rows = shared;
  for (const len of lengths) {
    rowStart.push(len > mp ? rows : 0);
    if (len > mp) rows += len;
  }
  const tables = newTables(rows, half);
  fillRows(tables, 0, shared, 0, inverseFrequencies(spec, mp), scale);
  lengths.forEach((len, k) => {
    if (len > mp) fillRows(tables, rowStart[k], len, 0, inverseFrequencies(spec, len), scale);
  });
  return { tables, rowStart };
}

/** Tables for token-by-token decoding of `length` positions (generate.ts): row p is position p.
 *  'dynamic' as transformers' cached decoding has it: position p's frequencies are those of a
 *  sequence of p + 1 tokens (at least max_position_embeddings), keys cached as they were rotated. */
export function ropeForDecoding(spec: RopeSpec, length: number): RopeTables {
  const half = spec.rotaryDim / 2;
  const scale = spec.attentionFactor ?? 1;
  const tables = newTables(length, half);
  if (spec.type !== 'dynamic' || length <= spec.maxPositions!) {
    fillRows(tables, 0, length, 0, inverseFrequencies(spec, spec.maxPositions), scale);
    return tables;
  }
  const mp = spec.maxPositions!;
  fillRows(tables, 0, mp, 0, inverseFrequencies(spec, mp), scale);
  for (let p = mp; p < length; p++) fillRows(tables, p, 1, p, inverseFrequencies(spec, p + 1), scale);
  return tables;
}
