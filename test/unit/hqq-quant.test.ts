// The HQQ quantizer core against the real hqq 0.2.8.post1 (test/fixtures/hqq, made on CPU
// with torch 2.6): codes, packed W_q, scale, zero and the dequantized weight in float32,
// bfloat16 and float16. optimize=False cases are compared bit for bit; optimize=True cases
// (the proximal solver, whose torch reductions and SLEEF pow a port need not reproduce to
// the last bit) within the tolerance of PROVENANCE.md.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { openCheckpoint, readTensorBytes, readTensorF32 } from '../../server/src/checkpoint';
import {
  HQQ_BITS,
  hqqDequantize,
  hqqDequantizeReference,
  hqqDequantizeRegion,
  hqqQuantizeRegion,
  hqqQuantizeResidual,
  hqqWorkRegions,
  hqqLastOptimizerTrace,
  hqqQuantize,
  hqqQuantizeReference,
  hqqShapeProblem,
  roundToDtype,
  type HqqComputeDtype,
  type HqqQuantized,
} from '../../server/src/quant/hqq';
import { hqqPack, hqqPackedShape, hqqPackingName, hqqUnpack } from '../../server/src/quant/hqqPack';
import { fixture, seededUniform } from '../helpers';
import { llmLike } from '../../server/src/tools/synth';
import { wasmKernelsOn, withWorkspace } from '../../server/src/kernels/kernels';
import type { KernelPool } from '../../server/src/kernels/pool';

interface HqqCase {
  name: string;
  file: string;
  shape: [number, number];
  nbits: number;
  group_size: number;
  optimize: boolean;
  round_zero: boolean;
  packing: string;
  n_groups: number;
  W_q_shape: [number, number];
  W_q_dtype: 'uint8' | 'int32';
  compute_dtypes: HqqComputeDtype[];
  tensors: Record<string, { dtype: string; shape: number[] }>;
  mean_abs_err_f32: number;
}
interface HqqIndex {
  matrices: Record<string, { file: string; shape: [number, number] }>;
  cases: HqqCase[];
}

const index: HqqIndex = JSON.parse(fs.readFileSync(fixture('hqq', 'index.json'), 'utf8'));
const matrixOf = (c: HqqCase) => c.name.replace(/-b\d+-g\d+-.*$/, '');
const isMaster = (c: HqqCase) => c.name.endsWith('-opt-master');

const weights = new Map<string, Float32Array>();
async function weight(c: HqqCase): Promise<Float32Array> {
  const m = matrixOf(c);
  let w = weights.get(m);
  if (!w) {
    const ck = await openCheckpoint(fixture('hqq', index.matrices[m].file));
    weights.set(m, (w = await readTensorF32(ck.byName.get('W')!)));
  }
  return w;
}

async function load(c: HqqCase) {
  const ck = await openCheckpoint(fixture('hqq', c.file));
  const t = (n: string) => {
    const info = ck.byName.get(n);
    assert.ok(info, `${c.name}: tensor ${n}`);
    return info;
  };
  const f32 = (n: string) => readTensorF32(t(n));
  const wq = t('W_q');
  return {
    codes: await readTensorBytes(t('codes')),
    wq: { data: await readTensorBytes(wq), dtype: wq.dtype, shape: wq.shape },
    scale: await f32('scale'),
    zero: await f32('zero'),
    has: (n: string) => ck.byName.has(n),
    f32,
  };
}

/** Bit-for-bit equality of float32 arrays (−0 ≠ +0, NaN payloads compared), naming the first difference. */
function sameBits(ours: Float32Array, ref: Float32Array, what: string): void {
  assert.equal(ours.length, ref.length, `${what}: length`);
  const a = new Uint32Array(ours.buffer, ours.byteOffset, ours.length);
  const b = new Uint32Array(ref.buffer, ref.byteOffset, ref.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) assert.fail(`${what}[${i}]: ${ours[i]} ≠ reference ${ref[i]}`);
}

function sameBytes(ours: Uint8Array, ref: Uint8Array, what: string): void {
  assert.equal(ours.length, ref.length, `${what}: length`);
  for (let i = 0; i < ours.length; i++)
    if (ours[i] !== ref[i]) assert.fail(`${what}[${i}]: ${ours[i]} ≠ reference ${ref[i]}`);
}

function quantizeCase(c: HqqCase, w: Float32Array, out?: HqqQuantized): HqqQuantized {
  return hqqQuantize(
    w,
    { bits: c.nbits, groupSize: c.group_size, optimize: c.optimize, roundZero: c.round_zero },
    out,
    isMaster(c) ? { updateBeta: true } : undefined,
  );
}

function meanAbsError(w: Float32Array, r: Float32Array): number {
  let s = 0;
  for (let i = 0; i < w.length; i++) s += Math.abs(w[i] - r[i]);
  return s / w.length;
}

test('the fixture index covers every bit width, both settings of optimize, and the 64×172 matrix', () => {
  const cases = index.cases;
  assert.equal(cases.length, 45);
  for (const b of HQQ_BITS) {
    assert.ok(
      cases.some((c) => c.nbits === b && !c.optimize && !isMaster(c)),
      `${b}-bit noopt`,
    );
    assert.ok(
      cases.some((c) => c.nbits === b && c.optimize && !isMaster(c)),
      `${b}-bit opt`,
    );
  }
  assert.ok(cases.some((c) => matrixOf(c) === 'stories-l0-down'));
  // HQQ's BaseQuantizeConfig rounds the zero for 4 bits only: our default agrees with every case.
  for (const c of cases) assert.equal(c.round_zero, c.nbits === 4, c.name);
});

test('packing names and W_q shapes are the ones HQQLinear holds', () => {
  for (const c of index.cases) {
    assert.equal(hqqPackingName(c.nbits), c.packing, c.name);
    assert.deepEqual(hqqPackedShape(c.n_groups, c.group_size, c.nbits), c.W_q_shape, c.name);
    assert.equal(c.W_q_dtype, c.nbits === 3 ? 'int32' : 'uint8', c.name);
  }
});

test('unpack(W_q) gives the fixture codes and pack(codes) the fixture W_q, byte for byte (every case)', async () => {
  for (const c of index.cases) {
    const ref = await load(c);
    const packed = hqqPack(ref.codes, c.n_groups, c.group_size, c.nbits);
    assert.equal(packed.dtype, c.nbits === 3 ? 'I32' : 'U8', c.name);
    assert.equal(ref.wq.dtype, packed.dtype, c.name);
    assert.deepEqual(packed.shape, ref.wq.shape, c.name);
    sameBytes(packed.data, ref.wq.data, `${c.name} W_q`);
    sameBytes(hqqUnpack(ref.wq as never, c.n_groups, c.group_size, c.nbits), ref.codes, `${c.name} unpack`);
  }
});

test('optimize=False: codes, W_q, scale and zero bit for bit from W (every -noopt case)', async () => {
  const cases = index.cases.filter((c) => !c.optimize);
  assert.equal(cases.length, 20);
  for (const c of cases) {
    const ref = await load(c);
    const w = await weight(c);
    const q = quantizeCase(c, w);
    sameBytes(q.codes, ref.codes, `${c.name} codes`);
    sameBits(q.scale, ref.scale, `${c.name} scale`);
    sameBits(q.zero, ref.zero, `${c.name} zero`);
    sameBytes(hqqPack(q.codes, c.n_groups, c.group_size, c.nbits).data, ref.wq.data, `${c.name} W_q`);
    const params = { bits: c.nbits, groupSize: c.group_size, optimize: false, roundZero: c.round_zero };
    const plain = hqqQuantizeReference(w, params);
    sameBytes(plain.codes, ref.codes, `${c.name} codes (TypeScript reference)`);
    sameBits(plain.zero, ref.zero, `${c.name} zero (TypeScript reference)`);
  }
});

test('dequantize: W_r in float32, bfloat16, float16 bit for bit; scale/zero cast to the dtype', async () => {
  let checked = 0;
  for (const c of index.cases) {
    const ref = await load(c);
    if (!c.compute_dtypes.length) assert.ok(!ref.has('W_r_float32'), c.name);
    for (const dt of c.compute_dtypes) {
      // From the fixture's own codes/scale/zero: the dequantization alone, for -opt cases too.
      const wr = hqqDequantize(ref.codes, ref.scale, ref.zero, c.group_size, dt);
      sameBits(wr, await ref.f32(`W_r_${dt}`), `${c.name} W_r_${dt}`);
      if (dt !== 'float32') {
        sameBits(roundToDtype(ref.scale, dt), await ref.f32(`scale_${dt}`), `${c.name} scale_${dt}`);
        sameBits(roundToDtype(ref.zero, dt), await ref.f32(`zero_${dt}`), `${c.name} zero_${dt}`);
      }
      checked++;
    }
  }
  assert.equal(checked, 65, '30 cases in float32 and bfloat16, 5 of them in float16 too');
});

test('optimize=False end to end: W → quantize → dequantize equals the fixture W_r in every dtype', async () => {
  for (const c of index.cases.filter((k) => !k.optimize && k.compute_dtypes.length)) {
    const ref = await load(c);
    const q = quantizeCase(c, await weight(c));
    for (const dt of c.compute_dtypes)
      sameBits(
        hqqDequantize(q.codes, q.scale, q.zero, c.group_size, dt),
        await ref.f32(`W_r_${dt}`),
        `${c.name} ${dt}`,
      );
  }
});

test('optimize=True (release solver; hqq master with updateBeta): within the fixtures tolerance', async () => {
  const cases = index.cases.filter((c) => c.optimize);
  assert.equal(cases.length, 25);
  let exactZeros = 0,
    zeros = 0;
  for (const c of cases) {
    const ref = await load(c);
    const w = await weight(c);
    const q = quantizeCase(c, w);
    // s_inv does not depend on the solver: scale is bit for bit.
    sameBits(q.scale, ref.scale, `${c.name} scale`);
    let same = 0;
    for (let i = 0; i < q.codes.length; i++) if (q.codes[i] === ref.codes[i]) same++;
    assert.ok(same >= 0.995 * q.codes.length, `${c.name}: ${q.codes.length - same} codes differ`);
    for (let i = 0; i < q.zero.length; i++) {
      const d = Math.abs(q.zero[i] - ref.zero[i]);
      assert.ok(d <= 1e-5 * Math.max(1, Math.abs(ref.zero[i])), `${c.name} zero[${i}]: ${q.zero[i]} vs ${ref.zero[i]}`);
      if (d === 0) exactZeros++;
      zeros++;
    }
    // Ours is no worse than hqq's by more than a hair.
    const err = meanAbsError(w, hqqDequantize(q.codes, q.scale, q.zero, c.group_size, 'float32'));
    assert.ok(err <= c.mean_abs_err_f32 * (1 + 1e-4), `${c.name}: mean |W − W_r| ${err} vs hqq ${c.mean_abs_err_f32}`);
    // W_q packs our codes exactly as hqq would: where the codes agree, so do the bytes.
    if (same === q.codes.length)
      sameBytes(hqqPack(q.codes, c.n_groups, c.group_size, c.nbits).data, ref.wq.data, `${c.name} W_q`);
  }
  // The float32 solver follows torch's summation order: nearly every zero is the library's.
  assert.ok(exactZeros >= 0.95 * zeros, `${exactZeros} of ${zeros} zeros bit for bit`);
});

test('the master solver (β ·= κ) is an option, not the default: it changes some 1-bit zeros', async () => {
  const c = index.cases.find((k) => k.name === 'synth128x96-b1-g64-opt')!;
  const m = index.cases.find((k) => k.name === 'synth128x96-b1-g64-opt-master')!;
  const [release, master] = [await load(c), await load(m)];
  let differ = 0;
  for (let i = 0; i < release.zero.length; i++) if (release.zero[i] !== master.zero[i]) differ++;
  assert.ok(differ > 0, 'the fixtures tell the two solvers apart');
  const q = quantizeCase(c, await weight(c));
  let nearRelease = 0;
  for (let i = 0; i < q.zero.length; i++)
    if (Math.abs(q.zero[i] - release.zero[i]) <= Math.abs(q.zero[i] - master.zero[i])) nearRelease++;
  assert.equal(nearRelease, q.zero.length);
});

test('out buffers are reused and give the same result', async () => {
  const c = index.cases.find((k) => k.name === 'synth128x96-b3-g64-noopt')!;
  const ref = await load(c);
  const n = c.shape[0] * c.shape[1];
  const out: HqqQuantized = {
    codes: new Uint8Array(n).fill(9),
    scale: new Float32Array(c.n_groups).fill(NaN),
    zero: new Float32Array(c.n_groups).fill(NaN),
  };
  const q = quantizeCase(c, await weight(c), out);
  assert.equal(q, out);
  sameBytes(out.codes, ref.codes, 'codes');
  sameBits(out.scale, ref.scale, 'scale');
  sameBits(out.zero, ref.zero, 'zero');
  const wr = new Float32Array(n).fill(NaN);
  assert.equal(hqqDequantize(ref.codes, ref.scale, ref.zero, c.group_size, 'bfloat16', wr), wr);
  sameBits(wr, await ref.f32('W_r_bfloat16'), 'W_r_bfloat16 into out');
  assert.throws(() =>
    hqqQuantize(
      new Float32Array(n),
      { bits: 3, groupSize: 64, optimize: false },
      { ...out, zero: new Float32Array(1) },
    ),
  );
});

test('hqqShapeProblem: 64×172 refuses 1 bit (172 groups of 64), holds 2, 3, 4 and 8 bits', () => {
  const p = hqqShapeProblem(64, 172, 1, 64);
  assert.ok(p, '1-bit refused');
  assert.match(p, /1-bit/);
  assert.match(p, /64×172/);
  assert.match(p, /172 groups of 64/);
  assert.match(p, /multiple of 8/);
  // 64·172 = 11008 = 2^8·43 values: 32 and 16 give 344 and 688 groups, multiples of 8.
  const sizes = /group sizes that fit: ([\d, ]+)/.exec(p)?.[1].split(', ').map(Number);
  assert.ok(sizes?.includes(32) && sizes.includes(16) && !sizes.includes(64), p);
  assert.match(p, /bit widths that fit at group size 64: 2, 3, 4, 8/);
  for (const b of [2, 3, 4, 8]) assert.equal(hqqShapeProblem(64, 172, b, 64), undefined, `${b} bits`);
  // Every fixture case is a shape hqq holds.
  for (const c of index.cases)
    assert.equal(hqqShapeProblem(c.shape[0], c.shape[1], c.nbits, c.group_size), undefined, c.name);
});

test('hqqShapeProblem: group size rules, values not a whole number of groups, packable group counts', () => {
  for (const b of HQQ_BITS) assert.equal(hqqShapeProblem(64, 64, b, 64), undefined);
  assert.match(hqqShapeProblem(64, 64, 4, 60)!, /multiples of 8, not 60/);
  assert.match(hqqShapeProblem(64, 64, 4, 0)!, /multiples of 8/);
  assert.match(hqqShapeProblem(10, 10, 4, 64)!, /100 values, not a multiple of the group size 64/);
  assert.match(hqqShapeProblem(64, 64, 5, 64)!, /not 5/);
  // 100 groups of 64: 2 and 4 bits pack (multiples of 4 and 2), 1 bit does not.
  assert.match(hqqShapeProblem(64, 100, 1, 64)!, /100 groups of 64 \(not a multiple of 8\)/);
  assert.equal(hqqShapeProblem(64, 100, 2, 64), undefined);
  // 6 groups of 64: 2 bits needs a multiple of 4.
  assert.match(hqqShapeProblem(6, 64, 2, 64)!, /2-bit HQQ packs 4 groups per byte row: 6×64 has 6 groups of 64/);
  assert.match(hqqShapeProblem(6, 64, 2, 64)!, /bit widths that fit at group size 64: 3, 4, 8/);
  // 3 bits pads any group count to a multiple of 10.
  assert.equal(hqqShapeProblem(7, 64, 3, 64), undefined);
  assert.throws(() => hqqPackedShape(6, 64, 2), /multiple of 4/);
});

test('guards: a (nearly) constant group gets s_inv 1; s_inv is capped at 2e4', () => {
  // Group 0 constant 0.5; group 1 spans 5e-5 (≤ 1e-4): s_inv 1, scale 1, zero −min.
  const x = new Float32Array(128);
  x.fill(0.5, 0, 64);
  for (let i = 64; i < 128; i++) x[i] = i % 2 ? 0.25 : 0.25005;
  for (const optimize of [false, true]) {
    const q = hqqQuantize(x, { bits: 2, groupSize: 64, optimize });
    assert.deepEqual([...q.scale], [1, 1]);
    if (!optimize) assert.deepEqual([...q.zero], [-0.5, -0.25]);
    assert.ok(q.zero.every(Number.isFinite));
  }
  assert.deepEqual(
    [...hqqQuantize(x, { bits: 2, groupSize: 64, optimize: false }).codes.slice(0, 64)],
    Array(64).fill(0),
  );
  // Range 1e-3 at 8 bits: 255 / 1e-3 = 2.55e5 is capped at 2e4 (scale fl(1/2e4), zero −1·2e4).
  const y = new Float32Array(64).fill(1);
  y[5] = 1.001;
  const q = hqqQuantize(y, { bits: 8, groupSize: 64, optimize: false });
  assert.equal(q.scale[0], Math.fround(1 / 2e4));
  assert.equal(q.zero[0], -2e4);
  assert.equal(q.codes[0], 0);
  assert.equal(q.codes[5], 20); // fl(fl(1.001)·2e4) = 20020, minus 20000
});

test('an all-zero matrix quantizes to zeros without NaN, at every width, with and without optimize', () => {
  const x = new Float32Array(16 * 64);
  for (const bits of HQQ_BITS)
    for (const optimize of [false, true]) {
      const q = hqqQuantize(x, { bits, groupSize: 64, optimize });
      assert.ok(q.codes.every((v) => v === 0));
      assert.ok(q.scale.every((v) => v === 1));
      assert.ok(q.zero.every((v) => v === 0));
      for (const dt of ['float32', 'bfloat16', 'float16'] as const)
        assert.ok(
          hqqDequantize(q.codes, q.scale, q.zero, 64, dt).every((v) => v === 0),
          `${bits} ${dt}`,
        );
    }
});

test('pack ∘ unpack is the identity for every width, 3-bit group counts not a multiple of 10 included', () => {
  for (const bits of HQQ_BITS)
    for (const groups of bits === 3 ? [1, 7, 10, 43] : [8, 16, 24]) {
      const g = 16;
      const u = seededUniform(groups * g, bits * 100 + groups);
      const codes = Uint8Array.from(u, (v) => Math.floor((v + 0.5) * 2 ** bits));
      const packed = hqqPack(codes, groups, g, bits);
      assert.deepEqual(packed.shape, hqqPackedShape(groups, g, bits));
      assert.equal(packed.data.length, packed.shape[0] * g * (bits === 3 ? 4 : 1));
      assert.deepEqual(hqqUnpack(packed, groups, g, bits), codes, `${bits} bits, ${groups} groups`);
    }
  assert.throws(() => hqqPack(new Uint8Array(6 * 8), 6, 8, 1), /multiple of 8/);
});

test('roundToDtype: ties to even in bfloat16 and float16, float16 subnormals and overflow', () => {
  const x = Float32Array.from([
    1 + 2 ** -8,
    1 + 3 * 2 ** -8,
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
    2 ** -25,
    3 * 2 ** -25,
    65519,
    65520,
  ]);
  assert.deepEqual([...roundToDtype(x, 'bfloat16').slice(0, 2)], [1, 1 + 2 ** -6]);
  assert.deepEqual(
    [...roundToDtype(x, 'float16')],
    [1 + 2 ** -8, 1 + 3 * 2 ** -8, 1, 1 + 2 ** -9, 0, 2 ** -23, 65504, Infinity],
  );
  assert.deepEqual([...roundToDtype(x, 'float32')], [...x]);
});

test('the WebAssembly passes give the TypeScript reference codes, scales, zeros and solver steps bit for bit', () => {
  // LLM-like rows, and uniform values with wide groups (|W − W_r| past the shrink floor:
  // the exact pow path at 1 and 2 bits), at group sizes with and without torch's cascade levels.
  const matrices: [string, Float32Array][] = [
    ['llm 96×256', llmLike(96, 256, 11)],
    ['uniform 32×1024', seededUniform(32 * 1024, 5)],
  ];
  for (const [name, x] of matrices)
    for (const groupSize of [8, 64, 128, 1024])
      for (const bits of HQQ_BITS)
        for (const optimize of [false, true])
          for (const updateBeta of optimize ? [false, true] : [false]) {
            const what = `${name} g${groupSize} ${bits}-bit optimize ${optimize}${updateBeta ? ' (master)' : ''}`;
            const p = { bits, groupSize, optimize };
            const ref = hqqQuantizeReference(x, p, undefined, { updateBeta });
            const refTrace = hqqLastOptimizerTrace();
            const q = hqqQuantize(x, p, undefined, { updateBeta });
            sameBytes(q.codes, ref.codes, `${what} codes`);
            sameBits(q.scale, ref.scale, `${what} scale`);
            sameBits(q.zero, ref.zero, `${what} zero`);
            if (optimize) assert.deepEqual(hqqLastOptimizerTrace(), refTrace, `${what} steps`);
          }
});

test('group sizes that are not a multiple of 8 take the reference path; bad parameters are refused', () => {
  const x = seededUniform(12 * 10, 3);
  const q = hqqQuantize(x, { bits: 3, groupSize: 12, optimize: true });
  assert.equal(q.scale.length, 10);
  assert.ok(q.zero.every(Number.isFinite));
  assert.throws(() => hqqQuantize(x, { bits: 5, groupSize: 12, optimize: false }), /bits/);
  assert.throws(() => hqqQuantize(x, { bits: 4, groupSize: 7, optimize: false }), /groups of 7/);
  assert.throws(() => hqqQuantize(x, { bits: 4, groupSize: 0, optimize: false }), /group size/);
});

test('dequantize kernels (float32, bfloat16) give the TypeScript reference values bit for bit', () => {
  for (const groupSize of [4, 12, 64]) {
    const groups = 40,
      n = groups * groupSize;
    const u = seededUniform(n + 2 * groups, groupSize);
    const codes = Uint8Array.from(u.subarray(0, n), (v) => Math.floor((v + 0.5) * 256));
    // Scales and zeros with bfloat16 ties and carries among them.
    const scale = Float32Array.from(u.subarray(n, n + groups), (v, i) => (i % 5 === 0 ? 1 + 2 ** -8 : v * 1e-2));
    const zero = Float32Array.from(u.subarray(n + groups), (v, i) => (i % 7 === 0 ? 3 * 2 ** -8 + 127 : v * 300));
    for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
      const ref = hqqDequantizeReference(codes, scale, zero, groupSize, dtype);
      sameBits(hqqDequantize(codes, scale, zero, groupSize, dtype), ref, `${dtype} g${groupSize}`);
    }
  }
});

test('region API: quantize and dequantize in the caller workspace, work regions reused across calls', () => {
  const x = llmLike(64, 256, 21),
    n = x.length,
    g = 64;
  withWorkspace((ws) => {
    const xr = ws.f32(n, x);
    const q = { codes: ws.u8(n), scale: ws.f32(n / g), zero: ws.f32(n / g) };
    const work = hqqWorkRegions(ws, n, g);
    const values = ws.f32(n);
    for (const bits of [2, 4])
      for (const optimize of [true, false]) {
        const p = { bits, groupSize: g, optimize };
        hqqQuantizeRegion(ws, xr, p, q, work);
        const ref = hqqQuantizeReference(x, p);
        sameBytes(q.codes.view(), ref.codes, `${bits} codes`);
        sameBits(q.scale.view(), ref.scale, `${bits} scale`);
        sameBits(q.zero.view(), ref.zero, `${bits} zero`);
        for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
          hqqDequantizeRegion(ws, q, g, dtype, values);
          sameBits(values.view(), hqqDequantizeReference(ref.codes, ref.scale, ref.zero, g, dtype), dtype);
        }
      }
    assert.throws(() => hqqQuantizeRegion(ws, xr, { bits: 2, groupSize: 32, optimize: true }, q, work), /regions/);
  });
});

test('hqqQuantizeResidual over a kernel pool: the codes, zeros, values and residual of one thread', async () => {
  // 2048 groups of 64 (8 of the solver's error chunks), split 4 ways and unevenly 3 ways.
  const x = llmLike(128, 1024, 8),
    n = x.length,
    g = 64;
  const w = Float32Array.from(x, (v, i) => v + (i % 7) * 1e-3);
  const fakePool = (helpers: number): KernelPool => ({
    helpers,
    call: async (_i, memory, name, args) =>
      (wasmKernelsOn(memory) as unknown as Record<string, (...a: number[]) => number | void>)[name](...args) ?? 0,
  });
  for (const dtype of ['float32', 'bfloat16', 'float16'] as const)
    for (const bits of [1, 3]) {
      const p = { bits, groupSize: g, optimize: true };
      const ref = hqqQuantizeReference(x, p);
      const refTrace = hqqLastOptimizerTrace();
      const refValues = hqqDequantizeReference(ref.codes, ref.scale, ref.zero, g, dtype);
      for (const pool of [undefined, fakePool(3), fakePool(2)])
        await withWorkspace(async (ws) => {
          const what = `${dtype} ${bits}-bit, ${pool ? pool.helpers + 1 : 1} parts`;
          const xr = ws.f32(n, x),
            wr = ws.f32(n, w),
            residual = ws.f32(n),
            values = ws.f32(n);
          const q = { codes: ws.u8(n), scale: ws.f32(n / g), zero: ws.f32(n / g) };
          const work = hqqWorkRegions(ws, n, g);
          const sum = await hqqQuantizeResidual(ws, xr, p, q, work, dtype, values, wr, residual, pool);
          assert.deepEqual(hqqLastOptimizerTrace(), refTrace, `${what} steps`);
          sameBytes(q.codes.view(), ref.codes, `${what} codes`);
          sameBits(q.zero.view(), ref.zero, `${what} zero`);
          sameBits(q.scale.view(), ref.scale, `${what} scale`);
          sameBits(values.view(), refValues, `${what} values`);
          const r = residual.view();
          let s2 = 0;
          for (let i = 0; i < n; i++) {
            assert.equal(r[i], Math.fround(w[i] - refValues[i]), `${what} residual[${i}]`);
            s2 += r[i] * r[i];
          }
          assert.ok(Math.abs(sum - s2) <= 1e-9 * s2, `${what}: Σ residual² ${sum} vs ${s2}`);
        });
    }
});
