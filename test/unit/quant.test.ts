import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { codebook, NF4_BITSANDBYTES, normalFloatTable } from '../../server/src/quant/codebook';
import { quantize, dequantize } from '../../server/src/quant/quantize';
import { nearestCode } from '../quantReference';
import { packCodes, unpackCodes, packedLength } from '../../server/src/quant/pack';
import { referenceCases, loadReference } from '../helpers';

const quantizerOf = (m: string) => (m === 'normal' ? 'nf' : 'uniform') as 'nf' | 'uniform';

const CODEBOOKS_BIT_FOR_BIT =
  'codebooks equal the reference fixtures bit for bit (nf2, nf3, nf8, ' + 'uniform2/4) and NF4 within 4 ulp';

test(CODEBOOKS_BIT_FOR_BIT, async () => {
  for (const c of referenceCases()) {
    const ref = await loadReference(c);
    const ours = codebook(quantizerOf(c.method), c.bits);
    assert.equal(ours.length, ref.codebook.length, c.file);
    for (let i = 0; i < ours.length; i++) {
      if (c.bits === 4 && c.method === 'normal') {
        // The fixture's table comes from create_normal_map(4); bitsandbytes' NF4 entry 1 differs by 4 ulp.
        assert.ok(Math.abs(ours[i] - ref.codebook[i]) <= 2.5e-7, `${c.file}[${i}]`);
      } else {
        assert.equal(ours[i], ref.codebook[i], `${c.file}[${i}]`);
      }
    }
  }
});

test('NF4 is the bitsandbytes table; NormalFloat-4 construction lies within 4 ulp of it', () => {
  assert.equal(codebook('nf', 4), NF4_BITSANDBYTES);
  assert.equal(NF4_BITSANDBYTES[0], -1);
  assert.equal(NF4_BITSANDBYTES[7], 0);
  assert.equal(Math.fround(NF4_BITSANDBYTES[1]), Math.fround(-0.6961928009986877));
  const built = normalFloatTable(4);
  for (let i = 0; i < 16; i++) assert.ok(Math.abs(built[i] - NF4_BITSANDBYTES[i]) <= 2.5e-7, `entry ${i}`);
  // NF2 values lie on the NF4 grid (the load-time NF4 re-quantization keeps them exact).
  for (const v of codebook('nf', 2)) assert.ok(NF4_BITSANDBYTES.includes(v), `${v} on NF4 grid`);
});

test('single-iteration fixtures: codes, scales and dequantized values identical to the reference', async () => {
  const cases = referenceCases().filter((c) => c.iters === 1);
  assert.ok(cases.length >= 2);
  for (const c of cases) {
    const ref = await loadReference(c);
    const q = quantize(ref.weight, ref.codebook, quantizerOf(c.method), c.block_size);
    assert.deepEqual(q.codes, ref.codes, `${c.file} codes`);
    assert.deepEqual(q.scales, ref.scale, `${c.file} scales`);
    assert.deepEqual(q.values, ref.dequantized, `${c.file} values`);
  }
});

test('fixture codes/scales/dequantized are consistent: dequantize(codes, scale) === dequantized', async () => {
  for (const c of referenceCases()) {
    const ref = await loadReference(c);
    assert.deepEqual(dequantize(ref.codes, ref.scale, ref.codebook, c.block_size), ref.dequantized, c.file);
  }
});

test('nearest code: ties go to the lower index, out-of-range clamps', () => {
  const t = Float32Array.from([-1, 0, 1]);
  assert.equal(nearestCode(t, 0.5), 1);
  assert.equal(nearestCode(t, -0.5), 0);
  assert.equal(nearestCode(t, 0.50001), 2);
  assert.equal(nearestCode(t, 7), 2);
  assert.equal(nearestCode(t, -7), 0);
});

test('all-zero blocks give zeros, never NaN; sizes that are not a multiple of the block work', () => {
  for (const quantizer of ['nf', 'uniform'] as const) {
    const x = new Float32Array(64 * 2 + 10);
    for (let i = 64; i < x.length; i++) x[i] = Math.sin(i) * 0.1;
    const q = quantize(x, codebook(quantizer, 2), quantizer, 64);
    assert.equal(q.scales.length, 3);
    for (let i = 0; i < 64; i++) assert.equal(q.values[i], 0);
    assert.ok(q.values.every(Number.isFinite));
    // the short tail block has its own scale from its 10 elements
    let m = 0;
    for (let i = 128; i < x.length; i++) m = Math.max(m, Math.abs(x[i]));
    if (quantizer === 'nf') assert.equal(q.scales[2], m);
  }
});

test('packing round-trips codes of every width, 3-bit straddling bytes', () => {
  for (const bits of [2, 3, 4, 8]) {
    const n = 1000 + bits;
    const codes = new Uint8Array(n);
    for (let i = 0; i < n; i++) codes[i] = (i * 7 + 3) % (1 << bits);
    const p = packCodes(codes, bits);
    assert.equal(p.length, packedLength(n, bits));
    assert.equal(p.length, Math.ceil((n * bits) / 8));
    assert.deepEqual(unpackCodes(p, bits, n), codes);
  }
  // layout: LSB first
  assert.deepEqual(packCodes(Uint8Array.from([1, 2, 3, 0]), 2), Uint8Array.from([0b00111001]));
});

test('the O(1) code lookup agrees with the float32 nearest-code rule everywhere, midpoints included', async () => {
  const { codesAtUnitScale } = await import('../../server/src/quant/quantize');
  for (const q of ['nf', 'uniform'] as const)
    for (const bits of [2, 3, 4, 8]) {
      const t = codebook(q, bits);
      const probes: number[] = [];
      for (let i = 0; i <= 20000; i++) probes.push(Math.fround(-1.3 + (2.6 * i) / 20000));
      for (let j = 0; j + 1 < t.length; j++) {
        const mid = (t[j] + t[j + 1]) / 2;
        for (const d of [0, 1e-9, -1e-9, 1e-7, -1e-7, 3e-8, -3e-8]) probes.push(Math.fround(mid + d));
      }
      const got = codesAtUnitScale(t, Float32Array.from(probes));
      probes.forEach((v, i) => assert.equal(got[i], nearestCode(t, v), `${q}${bits} at ${v}`));
    }
});

const QUANTIZE_PLAIN_DEFINITION =
  'quantize equals the plain definition (exact division, ' + 'float32 nearest rule) on random heavy-tailed data';

test(QUANTIZE_PLAIN_DEFINITION, async () => {
  const { gaussian } = await import('../../server/src/linalg/dense');
  const { absMaxScale, uniformScale } = await import('../../server/src/quant/quantize');
  const g = gaussian(64 * 500 + 37, 5);
  const x = g.map((v, i) => (i % 97 === 0 ? v * 40 : v) * 0.02);
  for (const q of ['nf', 'uniform'] as const)
    for (const bits of [2, 3, 4, 8]) {
      const t = codebook(q, bits);
      const got = quantize(x, t, q, 64);
      for (let b = 0; b * 64 < x.length; b++) {
        const len = Math.min(64, x.length - b * 64);
        const scale = q === 'nf' ? absMaxScale(x, b * 64, len) : uniformScale(x, b * 64, len);
        for (let i = b * 64; i < b * 64 + len; i++)
          assert.equal(got.codes[i], nearestCode(t, Math.fround(x[i] / scale)), `${q}${bits} [${i}]`);
      }
    }
});
