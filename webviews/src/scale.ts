// The heatmap's value → colour mapping. Two ranges: "data" follows this report but leaves
// far-out values (Tukey's fences, 3 × IQR beyond the quartiles) out of the range, so one
// outlier cannot squash every other cell into one colour; "fixed" is the same absolute
// range for every report, so an NF2 map and an NF4 map can be compared by eye. Values
// outside the range are flagged and, on the sequential palette, drawn in an overflow colour.
// Ratios use a diverging palette on a log scale centred on 1 (no change).
import { diverging, OVER, RGB, UNDER, viridis } from './colormap';

export type ScaleMode = 'data' | 'fixed';
export type Palette = 'sequential' | 'diverging';

export interface ColourScale {
  palette: Palette;
  /** Value range mapped onto the palette (a ratio range is symmetric around 1 in log space). */
  lo: number;
  hi: number;
  /** Number of finite values below lo / above hi. */
  under: number;
  over: number;
  /** 'over' / 'under' for a value outside [lo, hi], undefined inside or for NaN. */
  overflow(v: number): 'over' | 'under' | undefined;
  /** Cell colour; null for NaN (a skipped matrix). */
  colour(v: number): RGB | null;
}

/** Quantile with linear interpolation between order statistics (numpy's default, "type 7"). */
export function quantile(sorted: readonly number[], q: number): number {
  if (!sorted.length) return NaN;
  const x = (sorted.length - 1) * Math.min(1, Math.max(0, q));
  const i = Math.floor(x);
  const f = x - i;
  return i + 1 < sorted.length ? sorted[i] + (sorted[i + 1] - sorted[i]) * f : sorted[i];
}

/** [low fence, high fence] = [Q1 − k·IQR, Q3 + k·IQR] of the finite values (k = 3: "far out"). */
export function tukeyFences(values: ArrayLike<number>, k = 3): [number, number] | null {
  const v = Array.from(values)
    .filter(Number.isFinite)
    .sort((a, b) => a - b);
  if (!v.length) return null;
  const q1 = quantile(v, 0.25),
    q3 = quantile(v, 0.75);
  return [q1 - k * (q3 - q1), q3 + k * (q3 - q1)];
}

function finiteRange(values: ArrayLike<number>, keep: (v: number) => boolean): [number, number] | null {
  let lo = Infinity,
    hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v) || !keep(v)) continue;
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  return lo <= hi ? [lo, hi] : null;
}

function counted(values: ArrayLike<number>, lo: number, hi: number): { under: number; over: number } {
  let under = 0,
    over = 0;
  for (let i = 0; i < values.length; i++) {
    if (values[i] < lo) under++;
    else if (values[i] > hi) over++;
  }
  return { under, over };
}

/** Sequential scale for errors (lower is better). `fixed` is the absolute range used in fixed mode. */
export function sequentialScale(
  values: ArrayLike<number>,
  mode: ScaleMode,
  fixed: [number, number],
): ColourScale | null {
  let range: [number, number] | null;
  if (mode === 'fixed') range = fixed;
  else {
    const fences = tukeyFences(values);
    range = fences && finiteRange(values, (v) => v >= fences[0] && v <= fences[1]);
  }
  if (!range) return null;
  let [lo, hi] = range;
  if (!(hi > lo)) [lo, hi] = [lo - Math.abs(lo || 1) * 5e-4, hi + Math.abs(hi || 1) * 5e-4];
  const overflow = (v: number) => (v > hi ? ('over' as const) : v < lo ? ('under' as const) : undefined);
  return {
    palette: 'sequential',
    lo,
    hi,
    ...counted(values, lo, hi),
    overflow,
    colour: (v) => {
      if (!Number.isFinite(v)) return null;
      const o = overflow(v);
      return o === 'over' ? OVER : o === 'under' ? UNDER : viridis((v - lo) / (hi - lo));
    },
  };
}

/**
 * Diverging scale for ratios (QLoRA error ÷ LoftQ error): log(ratio) mapped onto [−1, 1] with
 * 1× in the middle. Data mode: half-width = the largest |log ratio| inside the fences; fixed
 * mode: `fixedMax` (a ratio > 1), i.e. [1/fixedMax, fixedMax]. Out of range: the end colour.
 */
export function ratioScale(values: ArrayLike<number>, mode: ScaleMode, fixedMax: number): ColourScale | null {
  const logs = Float64Array.from(Array.from(values), (v) => (v > 0 ? Math.log(v) : NaN));
  let half: number;
  if (mode === 'fixed') half = Math.log(fixedMax);
  else {
    const fences = tukeyFences(logs);
    const r = fences && finiteRange(logs, (v) => v >= fences[0] && v <= fences[1]);
    if (!r) return null;
    half = Math.max(Math.abs(r[0]), Math.abs(r[1]));
  }
  if (!(half > 0)) half = 1e-3;
  const lo = Math.exp(-half),
    hi = Math.exp(half);
  const overflow = (v: number) => (v > hi ? ('over' as const) : v < lo ? ('under' as const) : undefined);
  return {
    palette: 'diverging',
    lo,
    hi,
    ...counted(values, lo, hi),
    overflow,
    colour: (v) => (v > 0 && Number.isFinite(v) ? diverging(Math.log(v) / half) : null),
  };
}
