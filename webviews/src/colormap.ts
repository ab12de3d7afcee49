// Perceptual colour scale for the heatmap: viridis, interpolated in sRGB between ten
// samples of the published map. Pure so it can be unit-tested outside a browser.

const VIRIDIS: [number, number, number][] = [
  [0x44, 0x01, 0x54],
  [0x48, 0x28, 0x78],
  [0x3e, 0x49, 0x89],
  [0x31, 0x68, 0x8e],
  [0x26, 0x82, 0x8e],
  [0x1f, 0x9e, 0x89],
  [0x35, 0xb7, 0x79],
  [0x6e, 0xce, 0x58],
  [0xb5, 0xde, 0x2b],
  [0xfd, 0xe7, 0x25],
];

/** t in [0, 1] (clamped; NaN → null) → [r, g, b] 0–255. */
export function viridis(t: number): [number, number, number] | null {
  if (!Number.isFinite(t)) return null;
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const a = VIRIDIS[i],
    b = VIRIDIS[i + 1];
  return [0, 1, 2].map((k) => Math.round(a[k] + (b[k] - a[k]) * f)) as [number, number, number];
}

export type RGB = [number, number, number];

function sample(stops: readonly RGB[], t: number): RGB {
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const a = stops[i],
    b = stops[i + 1];
  return [0, 1, 2].map((k) => Math.round(a[k] + (b[k] - a[k]) * f)) as RGB;
}

// ColorBrewer RdBu (11 classes), red end first: a diverging map whose middle is the
// lightest colour, so "no change" reads as neutral and both directions gain ink.
const RDBU: RGB[] = [
  [0x67, 0x00, 0x1f],
  [0xb2, 0x18, 0x2b],
  [0xd6, 0x60, 0x4d],
  [0xf4, 0xa5, 0x82],
  [0xfd, 0xdb, 0xc7],
  [0xf7, 0xf7, 0xf7],
  [0xd1, 0xe5, 0xf0],
  [0x92, 0xc5, 0xde],
  [0x43, 0x93, 0xc3],
  [0x21, 0x66, 0xac],
  [0x05, 0x30, 0x61],
];

/** u in [−1, 1] (clamped; NaN → null): −1 dark red, 0 near-white, +1 dark blue. */
export function diverging(u: number): RGB | null {
  if (!Number.isFinite(u)) return null;
  return sample(RDBU, (u + 1) / 2);
}

/** Colour of values above a sequential scale's top: off the viridis path, so an outlier is never
 *  read as "the worst in range". */
export const OVER: RGB = [0xe0, 0x28, 0x5a];
/** Colour of values below a sequential scale's bottom. */
export const UNDER: RGB = [0x1b, 0x1b, 0x1b];

export const rgb = (c: [number, number, number]) => `rgb(${c[0]}, ${c[1]}, ${c[2]})`;

/** Black or white text, whichever reads better on this background (WCAG relative luminance). */
export function textOn(c: [number, number, number]): '#000' | '#fff' {
  const lin = (v: number) => {
    const s = v / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  };
  const l = 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
  return (l + 0.05) / 0.05 > 1.05 / (l + 0.05) ? '#000' : '#fff';
}

/** Min and max of the finite values (a flat range is widened so t stays defined). */
export function extent(values: ArrayLike<number>): [number, number] | null {
  let lo = Infinity,
    hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (Number.isFinite(v)) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  if (lo === Infinity) return null;
  return hi > lo ? [lo, hi] : [lo - 0.5 * Math.abs(lo || 1) * 1e-3, hi + 0.5 * Math.abs(hi || 1) * 1e-3];
}

/** CSS linear-gradient for the legend of either palette. */
export function legendGradient(palette: 'sequential' | 'diverging' = 'sequential', steps = 10): string {
  const at = (t: number) => (palette === 'sequential' ? viridis(t) : diverging(2 * t - 1))!;
  const stops = Array.from({ length: steps + 1 }, (_, i) => `${rgb(at(i / steps))} ${(100 * i) / steps}%`);
  return `linear-gradient(to right, ${stops.join(', ')})`;
}
