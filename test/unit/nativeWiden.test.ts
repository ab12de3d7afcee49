// The native read path (issue 28): a BF16 matrix widened to float32 and its NaN/Inf counted in
// one pass over the module's threads gives toFloat32's values bit for bit and the count a plain
// loop gives, on every bit pattern class (normals, subnormals, zeros, infinities, NaNs).

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { toFloat32 } from '../../server/src/checkpoint';
import { nativeAddon } from '../../server/src/linalg/nativeBackend';
import { requireNative } from './nativeRequired';
import { seededUniform } from '../helpers';

test('native widen: toFloat32 bit for bit, NaN/Inf counted as a loop counts them, any thread count', (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  const n = 300_001; // several 64 Ki parts and a ragged tail
  const r = seededUniform(n, 28);
  const src = new Uint16Array(n);
  for (let i = 0; i < n; i++) src[i] = Math.floor(r[i] * 65536) & 0xffff; // every class occurs
  for (const [i, v] of [
    [0, 0x7f80],
    [5, 0xff80],
    [77, 0x7fc1],
    [n - 1, 0x0001],
    [1000, 0x8000],
  ] as const)
    src[i] = v;
  const bytes = new Uint8Array(src.buffer);
  const expected = toFloat32('BF16', bytes);
  let bad = 0;
  for (let i = 0; i < n; i++) if (!Number.isFinite(expected[i])) bad++;
  assert.ok(bad > 0 && bad < n);
  for (const threads of [1, 2, 3]) {
    const dst = new Float32Array(n).fill(7);
    assert.equal(module.widen(src, dst, threads), bad, `${threads} threads: widened count`);
    assert.deepEqual(new Uint32Array(dst.buffer), new Uint32Array(expected.buffer), `${threads} threads: values`);
    assert.equal(module.widen(null, dst, threads), bad, `${threads} threads: count only`);
  }
  assert.throws(() => module.widen(src, new Float32Array(n - 1), 1), /widen\(src/);
});
