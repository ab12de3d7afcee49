// Writer → reader round trips (bytes identical, header laid out as the format says) and
// the float conversions against hand-computed bit patterns.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  DTYPE_SIZE,
  DType,
  SafetensorsWriter,
  TensorSpec,
  openCheckpoint,
  readTensorBytes,
  readTensorF32,
  readTensorRowsF32,
  toFloat32,
  fromFloat32,
  f32ToBf16Bits,
  f32ToF16Bits,
  roundTrip,
} from '../../server/src/checkpoint';
import { tempDir } from '../helpers';

const ALL = Object.keys(DTYPE_SIZE) as DType[];

function bytesOf(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

test('every dtype round-trips through the writer and reader with identical bytes', async () => {
  const dir = tempDir();
  const target = path.join(dir, 'model.safetensors');
  const specs: TensorSpec[] = ALL.map((dtype, i) => ({ name: `t.${i}.${dtype}`, dtype, shape: [3, i + 1] }));
  specs.push(
    { name: '__proto__', dtype: 'U8', shape: [2] },
    { name: 'toString', dtype: 'U8', shape: [0] },
    { name: 'scalar', dtype: 'F64', shape: [] },
  );
  const data = specs.map((s, i) => bytesOf(i + 1, s.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[s.dtype]));
  const w = await SafetensorsWriter.create(target, specs, { format: 'pt', note: 'ünïcode' });
  for (let i = 0; i < specs.length; i++) await w.write(specs[i].name, data[i]);
  await w.commit();
  assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']);

  // The layout, checked by hand: u64 header length, 8-aligned data, contiguous offsets.
  const raw = fs.readFileSync(target);
  const n = Number(raw.readBigUInt64LE(0));
  assert.equal((8 + n) % 8, 0);
  const header = JSON.parse(raw.subarray(8, 8 + n).toString('utf8'));
  assert.deepEqual(header.__metadata__, { format: 'pt', note: 'ünïcode' });
  let offset = 0;
  specs.forEach((s, i) => {
    const e = Object.getOwnPropertyDescriptor(header, s.name)!.value;
    assert.deepEqual(e, { dtype: s.dtype, shape: s.shape, data_offsets: [offset, offset + data[i].length] });
    assert.deepEqual(raw.subarray(8 + n + offset, 8 + n + offset + data[i].length), Buffer.from(data[i]));
    offset += data[i].length;
  });
  assert.equal(raw.length, 8 + n + offset);

  const ck = await openCheckpoint(target);
  assert.deepEqual(
    ck.tensors.map((t) => t.name),
    specs.map((s) => s.name),
  );
  for (let i = 0; i < specs.length; i++) {
    const t = ck.byName.get(specs[i].name)!;
    assert.equal(t.dtype, specs[i].dtype);
    assert.deepEqual(t.shape, specs[i].shape);
    assert.deepEqual(await readTensorBytes(t), data[i], specs[i].name);
  }
});

test('the writer refuses what the reader would refuse', async () => {
  const dir = tempDir();
  const target = path.join(dir, 'x.safetensors');
  const bad: [TensorSpec[], string][] = [
    [
      [
        { name: 'a', dtype: 'U8', shape: [1] },
        { name: 'a', dtype: 'U8', shape: [1] },
      ],
      'duplicate-key',
    ],
    [[{ name: '__metadata__', dtype: 'U8', shape: [1] }], 'tensor-entry'],
    [[{ name: 'a', dtype: 'Q4' as DType, shape: [1] }], 'dtype'],
    [[{ name: 'a', dtype: 'U8', shape: [-1] }], 'shape'],
    [[{ name: 'a', dtype: 'F64', shape: [2 ** 26, 2 ** 26] }], 'shape'],
  ];
  for (const [specs, kind] of bad)
    await assert.rejects(
      SafetensorsWriter.create(target, specs),
      (e: Error & { kind?: string }) => e.kind === kind && e.message.includes(target),
    );
  assert.deepEqual(fs.readdirSync(dir), []);
});

test('F16 → float32 is exact: normals, subnormals, ±0, ±Inf, NaN payloads', () => {
  // [half bits, float32 bits], computed by hand from the IEEE 754 layouts.
  const cases: [number, number][] = [
    [0x3c00, 0x3f800000], // 1
    [0xc000, 0xc0000000], // -2
    [0x7bff, 0x477fe000], // 65504, the largest half
    [0x3555, 0x3eaaa000], // 0.333251953125
    [0x0400, 0x38800000], // 2^-14, the smallest normal
    [0x0001, 0x33800000], // 2^-24, the smallest subnormal
    [0x03ff, 0x387fc000], // 1023·2^-24, the largest subnormal
    [0x0200, 0x38000000], // 2^-15
    [0x8001, 0xb3800000], // -2^-24
    [0x0000, 0x00000000],
    [0x8000, 0x80000000], // -0
    [0x7c00, 0x7f800000], // +Inf
    [0xfc00, 0xff800000], // -Inf
    [0x7e00, 0x7fc00000], // quiet NaN
    [0x7c01, 0x7f802000], // signalling NaN, payload kept
    [0xfe01, 0xffc02000],
  ];
  const halves = new Uint16Array(cases.map((c) => c[0]));
  const out = new Uint32Array(toFloat32('F16', new Uint8Array(halves.buffer)).buffer);
  cases.forEach(([h, f], i) => assert.equal(out[i], f >>> 0, `half 0x${h.toString(16)}`));
  // Every half round-trips through float32 and back to the same bits (NaNs stay NaN).
  const all = new Uint16Array(65536).map((_, i) => i);
  const f = toFloat32('F16', new Uint8Array(all.buffer));
  for (let i = 0; i < 65536; i++) {
    if (Number.isNaN(f[i])) assert.ok(Number.isNaN(f[i]));
    else assert.equal(f32ToF16Bits(f[i]), i, `0x${i.toString(16)}`);
  }
});

test('BF16 → float32 is the upper half of the float32 bits; float32 → BF16/F16 rounds to nearest even', () => {
  const bf: [number, number][] = [
    [0x3f80, 1],
    [0xc040, -3],
    [0x4049, 3.140625],
    [0x7f80, Infinity],
    [0xff80, -Infinity],
    [0x8000, -0],
    [0x0001, 2 ** -133],
  ];
  const v = toFloat32('BF16', new Uint8Array(new Uint16Array(bf.map((c) => c[0])).buffer));
  bf.forEach(([, x], i) => assert.ok(Object.is(v[i], x), `${bf[i][0].toString(16)} → ${v[i]}`));
  assert.ok(Number.isNaN(toFloat32('BF16', new Uint8Array([0xc0, 0x7f]))[0]));
  assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80); // tie, even stays
  assert.equal(f32ToBf16Bits(1 + 3 * 2 ** -8), 0x3f82); // tie, odd rounds up
  assert.equal(f32ToBf16Bits(1 + 2 ** -8 + 2 ** -20), 0x3f81); // above the tie
  assert.equal(f32ToBf16Bits(NaN) & 0x7fc0, 0x7fc0);
  assert.equal(f32ToF16Bits(65520), 0x7c00); // halfway past the largest half → Inf
  assert.equal(f32ToF16Bits(65519), 0x7bff);
  assert.equal(f32ToF16Bits(2 ** -25), 0x0000); // tie between 0 and 2^-24 → even (0)
  assert.equal(f32ToF16Bits(3 * 2 ** -26), 0x0001);
  assert.equal(f32ToF16Bits(3 * 2 ** -25), 0x0002); // tie 1.5·2^-24 → 2
  assert.equal(f32ToF16Bits(-0), 0x8000);
  assert.equal(f32ToF16Bits(1 + 2 ** -11), 0x3c00); // tie → even
  assert.equal(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02);
  const x = new Float32Array([0.1, -2.5, 1e-6, 3e38]);
  assert.deepEqual([...roundTrip('BF16', x)], [...toFloat32('BF16', fromFloat32('BF16', x))]);
  assert.equal(roundTrip('F32', x), x);
  assert.throws(() => toFloat32('F16', new Uint8Array(3)), /not a whole number/);
  assert.throws(() => toFloat32('I32', new Uint8Array(4)), /unsupported/);
});

test('readTensorF32 converts F32, F16 and BF16 tensors of a written file', async () => {
  const dir = tempDir();
  const target = path.join(dir, 'm.safetensors');
  const x = new Float32Array([1.5, -0.25, 65504, 2 ** -24, Infinity, -0]);
  const specs: TensorSpec[] = (['F32', 'F16', 'BF16'] as DType[]).map((dtype) => ({
    name: dtype,
    dtype,
    shape: [2, 3],
  }));
  const w = await SafetensorsWriter.create(target, specs);
  for (const s of specs) await w.write(s.name, fromFloat32(s.dtype, x));
  await w.commit();
  const ck = await openCheckpoint(target);
  assert.deepEqual([...(await readTensorF32(ck.byName.get('F32')!))], [...x]);
  assert.deepEqual([...(await readTensorF32(ck.byName.get('F16')!))], [...x]); // all exact in half
  assert.deepEqual([...(await readTensorF32(ck.byName.get('BF16')!))], [1.5, -0.25, 65536, 2 ** -24, Infinity, -0]);
});

test('readTensorRowsF32: the rows asked for (any order, repeats, gaps) equal those of the whole tensor', async () => {
  const dir = tempDir();
  const target = path.join(dir, 'e.safetensors');
  const [rows, width] = [40, 5];
  const x = Float32Array.from({ length: rows * width }, (_, i) => (i % 7) - 3 + i / 64);
  const specs: TensorSpec[] = (['F32', 'BF16'] as DType[]).map((dtype) => ({
    name: dtype,
    dtype,
    shape: [rows, width],
  }));
  const w = await SafetensorsWriter.create(target, specs);
  for (const s of specs) await w.write(s.name, fromFloat32(s.dtype, x));
  await w.commit();
  const ck = await openCheckpoint(target);
  for (const s of specs) {
    const t = ck.byName.get(s.name)!;
    const whole = await readTensorF32(t);
    // Neighbours read together (gap ≤ 8), far ones apart, the first and last row included.
    const asked = [39, 3, 0, 3, 12, 4, 25, 21, 39];
    const got = await readTensorRowsF32(t, width, asked);
    assert.deepEqual(
      [...got.keys()].sort((a, b) => a - b),
      [0, 3, 4, 12, 21, 25, 39],
    );
    for (const r of asked) assert.deepEqual([...got.get(r)!], [...whole.subarray(r * width, (r + 1) * width)], `${r}`);
    assert.equal((await readTensorRowsF32(t, width, [])).size, 0);
    await assert.rejects(readTensorRowsF32(t, width, [40]), /outside 0\.\.39/);
    await assert.rejects(readTensorRowsF32(t, width, [-1]), /outside 0\.\.39/);
  }
});
