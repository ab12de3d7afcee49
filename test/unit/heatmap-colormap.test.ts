// The heatmap's colour scale: viridis end points, monotone lightness (what makes it
// perceptual), readable text on every colour, and the value range it maps from.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { extent, textOn, viridis } from '../../webviews/src/colormap';

const luminance = ([r, g, b]: number[]) => {
  const lin = (v: number) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
  return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
};

test('viridis runs from dark purple (#440154) to yellow (#fde725) and clamps', () => {
  assert.deepEqual(viridis(0), [0x44, 0x01, 0x54]);
  assert.deepEqual(viridis(1), [0xfd, 0xe7, 0x25]);
  assert.deepEqual(viridis(-3), viridis(0));
  assert.deepEqual(viridis(7), viridis(1));
  assert.equal(viridis(NaN), null);
});

test('lightness rises monotonically along the scale', () => {
  let prev = -1;
  for (let i = 0; i <= 200; i++) {
    const l = luminance(viridis(i / 200)!);
    assert.ok(l >= prev - 1e-9, `luminance drops at t=${i / 200}`);
    prev = l;
  }
});

test('cell text keeps at least 4.5:1 contrast everywhere on the scale', () => {
  for (let i = 0; i <= 100; i++) {
    const c = viridis(i / 100)!;
    const lc = luminance(c);
    const lt = textOn(c) === '#000' ? 0 : 1;
    const ratio = (Math.max(lc, lt) + 0.05) / (Math.min(lc, lt) + 0.05);
    assert.ok(ratio >= 4.5, `contrast ${ratio.toFixed(2)} at t=${i / 100}`);
  }
});

test('extent ignores NaN (skipped matrices) and widens a flat range', () => {
  assert.deepEqual(extent(Float32Array.from([0.5, NaN, 0.25, 0.75])), [0.25, 0.75]);
  assert.equal(extent([NaN, NaN]), null);
  const [lo, hi] = extent([0.3, 0.3])!;
  assert.ok(lo < 0.3 && hi > 0.3);
});
