// The heatmap's colour scales (data range with far-out values left out, fixed absolute range,
// log-ratio diverging scale), the diverging palette, and the row/column means — checked
// against hand-computed values (numpy's quantile definition, ColorBrewer's RdBu end points).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { diverging, OVER, textOn, UNDER, viridis } from '../../webviews/src/colormap';
import { gridMeans, mean } from '../../webviews/src/means';
import { quantile, ratioScale, sequentialScale, tukeyFences } from '../../webviews/src/scale';

const luminance = ([r, g, b]: number[]) => {
  const lin = (v: number) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
  return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
};
const contrast = (c: number[]) => {
  const lc = luminance(c),
    lt = textOn(c as [number, number, number]) === '#000' ? 0 : 1;
  return (Math.max(lc, lt) + 0.05) / (Math.min(lc, lt) + 0.05);
};
const close = (a: number, b: number, tol = 1e-12) => assert.ok(Math.abs(a - b) <= tol, `${a} ≠ ${b}`);

test('quantile interpolates like numpy.percentile; fences are Q1 − 3·IQR and Q3 + 3·IQR', () => {
  // numpy.percentile([1, 2, 3, 4], [25, 75]) == [1.75, 3.25]
  close(quantile([1, 2, 3, 4], 0.25), 1.75);
  close(quantile([1, 2, 3, 4], 0.75), 3.25);
  close(quantile([7], 0.5), 7);
  assert.ok(Number.isNaN(quantile([], 0.5)));
  const [lo, hi] = tukeyFences([4, NaN, 1, 3, 2])!;
  close(lo, 1.75 - 3 * 1.5);
  close(hi, 3.25 + 3 * 1.5);
});

test('data range: one far-out matrix gets the overflow colour instead of squashing the others', () => {
  const v = [0.1, 0.11, 0.12, 0.13, 0.14, 0.15, 0.16, 5.0];
  // Q1 = 0.1175, Q3 = 0.1525 → high fence 0.2575: 5.0 is out, 0.16 becomes the top.
  const s = sequentialScale(v, 'data', [0, 0.5])!;
  close(s.lo, 0.1);
  close(s.hi, 0.16);
  assert.equal(s.over, 1);
  assert.equal(s.under, 0);
  assert.equal(s.overflow(5.0), 'over');
  assert.deepEqual(s.colour(5.0), OVER);
  assert.deepEqual(s.colour(0.16), viridis(1));
  assert.deepEqual(s.colour(0.1), viridis(0));
  assert.deepEqual(s.colour(0.13), viridis(0.5));
  assert.equal(s.colour(NaN), null);
  // Without the outlier nothing is clipped: the range is min..max.
  const t = sequentialScale(v.slice(0, -1), 'data', [0, 0.5])!;
  assert.equal(t.over + t.under, 0);
  close(t.hi, 0.16);
});

test('fixed range: a value has the same colour in an NF2 map and an NF4 map', () => {
  const nf4 = [0.06, 0.07, 0.08, 0.09];
  const nf2 = [0.3, 0.33, 0.36, 0.41];
  const a = sequentialScale(nf4, 'fixed', [0, 0.5])!,
    b = sequentialScale(nf2, 'fixed', [0, 0.5])!;
  assert.deepEqual([a.lo, a.hi, b.lo, b.hi], [0, 0.5, 0, 0.5]);
  assert.deepEqual(a.colour(0.25), b.colour(0.25));
  assert.deepEqual(a.colour(0.25), viridis(0.5));
  assert.deepEqual(b.colour(0.6), OVER);
  assert.deepEqual(b.colour(-0.1), UNDER);
  // In data mode the two maps colour 0.08 differently: that is what fixed mode is for.
  const own = sequentialScale(nf4, 'data', [0, 0.5])!,
    mixed = sequentialScale([0.08, 0.41], 'data', [0, 0.5])!;
  assert.notDeepEqual(own.colour(0.08), mixed.colour(0.08));
});

test('a flat data range is widened so every cell still gets a colour', () => {
  const s = sequentialScale([0.2, 0.2, NaN], 'data', [0, 0.5])!;
  assert.ok(s.lo < 0.2 && s.hi > 0.2);
  assert.ok(s.colour(0.2));
  assert.equal(sequentialScale([NaN], 'data', [0, 0.5]), null);
});

test('diverging palette: RdBu end points, neutral middle, ink grows away from 1×', () => {
  assert.deepEqual(diverging(-1), [0x67, 0x00, 0x1f]);
  assert.deepEqual(diverging(0), [0xf7, 0xf7, 0xf7]);
  assert.deepEqual(diverging(1), [0x05, 0x30, 0x61]);
  assert.deepEqual(diverging(3), diverging(1));
  assert.equal(diverging(NaN), null);
  let prevUp = Infinity,
    prevDown = Infinity;
  for (let i = 0; i <= 100; i++) {
    const up = luminance(diverging(i / 100)!),
      down = luminance(diverging(-i / 100)!);
    assert.ok(up <= prevUp + 1e-9 && down <= prevDown + 1e-9, `lightness rises away from the middle at ${i / 100}`);
    prevUp = up;
    prevDown = down;
  }
  for (let i = -50; i <= 50; i++) assert.ok(contrast(diverging(i / 50)!) >= 4.5, `text contrast at ${i / 50}`);
  assert.ok(contrast(OVER) >= 4.5 && contrast(UNDER) >= 4.5);
});

test('ratio scale: log-symmetric around 1×; 2× and 0.5× are mirror images', () => {
  const s = ratioScale([1.5, 2, 0.5, 1.2], 'data', 4)!;
  close(s.lo, 0.5, 1e-12);
  close(s.hi, 2, 1e-12);
  assert.deepEqual(s.colour(1), diverging(0));
  assert.deepEqual(s.colour(2), diverging(1));
  assert.deepEqual(s.colour(0.5), diverging(-1));
  assert.deepEqual(s.colour(Math.SQRT2), diverging(0.5));
  const f = ratioScale([1.1, 1.3], 'fixed', 4)!;
  close(f.lo, 0.25);
  close(f.hi, 4);
  assert.deepEqual(f.colour(2), diverging(0.5));
  assert.equal(f.overflow(8), 'over');
  assert.deepEqual(f.colour(8), diverging(1));
  assert.equal(f.colour(NaN), null);
  assert.equal(f.colour(0), null);
});

test('means: arithmetic for errors, geometric for ratios, empty cells and NaN left out', () => {
  close(mean([0.1, NaN, 0.3]), 0.2);
  close(mean([2, 0.5], 'geometric'), 1);
  close(mean([1, 4], 'geometric'), 2);
  assert.ok(Number.isNaN(mean([NaN])));
  // Grid: row 0 = cells 0, 1; row 1 = cell 2 and an empty cell; cell 3 is skipped (NaN).
  const at = [
    [0, 1],
    [2, undefined],
    [undefined, 3],
  ];
  const g = gridMeans(at, [0.1, 0.3, 0.2, NaN], 'arithmetic');
  close(g.rows[0], 0.2);
  close(g.rows[1], 0.2);
  assert.ok(Number.isNaN(g.rows[2]));
  close(g.columns[0], 0.15);
  close(g.columns[1], 0.3);
  close(g.all, 0.2);
  const r = gridMeans([[0, 1]], [2, 8], 'geometric');
  close(r.rows[0], 4);
  close(r.all, 4);
});
