// Every way a safetensors header can be wrong gives a typed CheckpointError whose one
// line names the file, the tensor where there is one, and the problem. Inputs are built
// byte by byte (checkpoint-raw.ts), not with our writer.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { openCheckpoint, readTensorBytes, readTensorF32, MAX_HEADER_BYTES } from '../../server/src/checkpoint';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { tempDir, fixture, repoRoot } from '../helpers';
import { put, rawFile, rejects } from './checkpoint-raw';

const dir = tempDir('loftq-validate-');
let counter = 0;
function file(bytes: Uint8Array): string {
  return put(dir, `case${counter++}.safetensors`, bytes);
}
const t = (dtype: unknown, shape: unknown, offsets: unknown) => ({ dtype, shape, data_offsets: offsets });
async function bad(
  header: string | object,
  data: Uint8Array | number,
  kind: string,
  problem: RegExp,
  tensor?: string,
  length?: bigint,
) {
  const p = file(rawFile(header, data, length));
  return rejects(openCheckpoint(p), kind, p, problem, tensor);
}

test('a well-formed handmade file opens with the right layout and values', async () => {
  const data = new Uint8Array(16 + 4);
  new Float32Array(data.buffer, 0, 4).set([1, -2, 0.5, 3]);
  data.set([7, 8, 9, 10], 16);
  const p = file(
    rawFile({ __metadata__: { format: 'pt' }, b: t('U8', [4], [16, 20]), a: t('F32', [2, 2], [0, 16]) }, data),
  );
  const ck = await openCheckpoint(p);
  assert.deepEqual(ck.metadata, { format: 'pt' });
  assert.deepEqual(
    ck.tensors.map((x) => x.name),
    ['a', 'b'],
  ); // data order
  assert.deepEqual([...(await readTensorF32(ck.byName.get('a')!))], [1, -2, 0.5, 3]);
  assert.deepEqual([...(await readTensorBytes(ck.byName.get('b')!))], [7, 8, 9, 10]);
  await rejects(readTensorF32(ck.byName.get('b')!), 'dtype', p, /not a float type/, 'b');
});

test('the real fixtures open and every tensor reads', async () => {
  for (const f of [
    fixture('real', 'stories260k', 'model.safetensors'),
    fixture('real', 'tiny-llm', 'model.safetensors'),
  ]) {
    const ck = await openCheckpoint(f);
    assert.ok(ck.tensors.length > 0);
    const size = fs.statSync(f).size;
    assert.equal(ck.tensors.reduce((a, x) => a + x.byteLength, 0) + 8 + ck.headers[0].headerLength, size);
    for (const x of ck.tensors) assert.equal((await readTensorBytes(x)).byteLength, x.byteLength);
  }
});

test('header length: too short, zero, over 100 MB, past the end of the file', async () => {
  const tiny = file(new Uint8Array([1, 0, 0]));
  await rejects(openCheckpoint(tiny), 'header-length', tiny, /too short/);
  await bad('{}', 0, 'header-length', /is 0/, undefined, 0n);
  await bad('{}', 0, 'header-length', /exceeds the 100 MB limit/, undefined, BigInt(MAX_HEADER_BYTES + 1));
  await bad('{}', 0, 'header-length', /exceeds the 100 MB limit/, undefined, 2n ** 64n - 1n);
  await bad('{}', 0, 'header-length', /past the end of the file/, undefined, 3n);
});

test('header JSON: invalid, truncated, not UTF-8, not an object, leading whitespace', async () => {
  await bad('{"a": {"dtype": "F32"', 0, 'header-json', /not valid JSON/);
  await bad('{"a": 1,}', 0, 'header-json', /not valid JSON/);
  const notUtf8 = new Uint8Array([8, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]);
  const p = file(notUtf8);
  await rejects(openCheckpoint(p), 'header-json', p, /not valid UTF-8/);
  await bad('[1, 2]', 0, 'header-type', /JSON array, not a JSON object/);
  await bad('42', 0, 'header-type', /42, not a JSON object/);
  await bad(' {}', 0, 'header-json', /does not start with/);
});

test('duplicate keys are refused (JSON.parse alone would keep the last)', async () => {
  const a = '{"dtype":"U8","shape":[1],"data_offsets":[0,1]}';
  await bad(`{"w":${a},"w":${a}}`, 1, 'duplicate-key', /appears twice in the header/, 'w');
  await bad(`{"w":${a},"\\u0077":${a}}`, 1, 'duplicate-key', /appears twice/, 'w');
  await bad(
    '{"w":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,1]}}',
    1,
    'duplicate-key',
    /key 'dtype' appears twice in its entry/,
    'w',
  );
  const e = await bad(
    `{"__metadata__":{"k":"1","k":"2"},"w":${a}}`,
    1,
    'duplicate-key',
    /key 'k' appears twice in __metadata__/,
  );
  assert.equal(e.tensor, undefined);
  // Equal strings as values are not keys.
  const ok = file(rawFile(`{"__metadata__":{"x":"w","y":"w"},"w":${a}}`, 1));
  assert.equal((await openCheckpoint(ok)).tensors.length, 1);
});

test('__metadata__ must be a string→string map', async () => {
  await bad({ __metadata__: ['a'] }, 0, 'metadata', /not a string→string map/);
  await bad({ __metadata__: 'x' }, 0, 'metadata', /not a string→string map/);
  await bad({ __metadata__: { a: 1 } }, 0, 'metadata', /__metadata__\["a"\] is 1, not a string/);
  await bad({ __metadata__: { a: { b: 'c' } } }, 0, 'metadata', /not a string/);
  // __proto__ is kept as an ordinary key, not turned into a prototype.
  const p = file(rawFile('{"__metadata__":{"__proto__":"x"}}'));
  const ck = await openCheckpoint(p);
  assert.equal(Object.getOwnPropertyDescriptor(ck.metadata, '__proto__')?.value, 'x');
});

test('tensor entries: wrong type, unknown dtype, bad shapes', async () => {
  await bad({ w: 5 }, 0, 'tensor-entry', /entry is 5, not an object/, 'w');
  await bad({ w: [1] }, 0, 'tensor-entry', /not an object/, 'w');
  await bad({ w: null }, 0, 'tensor-entry', /not an object/, 'w');
  for (const dt of ['F128', 'f32', '', 'Q4_0', 7, null])
    await bad({ w: t(dt, [1], [0, 1]) }, 1, 'dtype', /unknown dtype/, 'w');
  await bad({ w: t('U8', 'x', [0, 1]) }, 1, 'shape', /not an array/, 'w');
  await bad({ w: t('U8', [-1], [0, 1]) }, 1, 'shape', /not a non-negative integer/, 'w');
  await bad({ w: t('U8', [1.5], [0, 1]) }, 1, 'shape', /not a non-negative integer/, 'w');
  await bad({ w: t('U8', ['1'], [0, 1]) }, 1, 'shape', /not a non-negative integer/, 'w');
  await bad('{"w":{"dtype":"U8","shape":[1e400],"data_offsets":[0,1]}}', 1, 'shape', /not a non-negative integer/, 'w');
  await bad({ w: t('U8', [2 ** 27, 2 ** 27], [0, 1]) }, 1, 'shape', /more than 2\^53 elements/, 'w');
  await bad({ w: t('U8', [2 ** 40, 2 ** 40, 0], [0, 0]) }, 0, 'shape', /more than 2\^53/, 'w');
  // Deeply nested shapes describe themselves briefly instead of overflowing the stack.
  const deep = '['.repeat(100000) + ']'.repeat(100000);
  const e = await bad(
    `{"w":{"dtype":"U8","shape":[${deep}],"data_offsets":[0,1]}}`,
    1,
    'shape',
    /not a non-negative integer/,
    'w',
  );
  assert.ok(e.message.length < 400);
});

test('shapes and offsets written as floats are refused, as the reference reader does (issue 14.8)', async () => {
  // JSON.parse reads 1e2 and 2.0 as the integers 100 and 2; the reference reads usize and refuses them.
  const body = (shape: string, offsets = '[0,200]') =>
    `{"w":{"dtype":"U8","shape":${shape},"data_offsets":${offsets}}}`;
  await bad(body('[1e2, 2.0]'), 200, 'shape', /not a non-negative integer \("1e2" is written as a float/, 'w');
  await bad(body('[100, 2.0]'), 200, 'shape', /"2\.0" is written as a float/, 'w');
  await bad(body('[100, 2]', '[0,2E2]'), 200, 'offsets', /not a pair of non-negative integers \("2E2"/, 'w');
  // Floats elsewhere (metadata strings, unknown fields the reference ignores) are not shapes.
  const ok = file(
    rawFile('{"__metadata__":{"v":"1.5"},"w":{"dtype":"U8","shape":[100,2],"data_offsets":[0,200],"x":[2.5]}}', 200),
  );
  assert.deepEqual((await openCheckpoint(ok)).tensors[0].shape, [100, 2]);
});

test('a header with 200,000 tensors inspects without overflowing the stack (issue 14.8)', async () => {
  const n = 200_000;
  const parts: string[] = [];
  for (let i = 0; i < n; i++) parts.push(`"t${i}":{"dtype":"U8","shape":[1],"data_offsets":[${i},${i + 1}]}`);
  const p = file(rawFile(`{${parts.join(',')}}`, n));
  const r = spawnSync(process.execPath, [path.join(repoRoot, 'dist', 'cli.js'), 'inspect', p], {
    encoding: 'utf8',
    maxBuffer: 1 << 26,
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /200000 tensors, 200,000 parameters/);
  assert.equal(r.stdout.trim().split('\n').length, 2 + n);
});

test('every dtype is known, with its size; byte length must equal product(shape) × size', async () => {
  const sizes: Record<string, number> = {
    F64: 8,
    F32: 4,
    F16: 2,
    BF16: 2,
    I64: 8,
    I32: 4,
    I16: 2,
    I8: 1,
    U64: 8,
    U32: 4,
    U16: 2,
    U8: 1,
    BOOL: 1,
    F8_E4M3: 1,
    F8_E5M2: 1,
  };
  for (const [dt, size] of Object.entries(sizes)) {
    const p = file(rawFile({ w: t(dt, [2, 3], [0, 6 * size]) }, 6 * size));
    const ck = await openCheckpoint(p);
    assert.equal(ck.tensors[0].byteLength, 6 * size, dt);
    assert.equal(ck.tensors[0].parameters, 6, dt);
    await bad(
      { w: t(dt, [2, 3], [0, 6 * size + 1]) },
      6 * size + 1,
      'byte-length',
      new RegExp(`holds ${6 * size + 1} bytes but ${dt}\\[2, 3\\] needs ${6 * size}`),
      'w',
    );
  }
  const empty = file(rawFile({ w: t('F32', [0, 5], [0, 0]) }));
  assert.equal((await readTensorF32((await openCheckpoint(empty)).tensors[0])).length, 0);
});

test('offsets: malformed, reversed, past the end, overlapping, gaps, trailing bytes', async () => {
  await bad({ w: t('U8', [1], [0]) }, 1, 'offsets', /not a pair of non-negative integers/, 'w');
  await bad({ w: t('U8', [1], [-1, 0]) }, 1, 'offsets', /not a pair/, 'w');
  await bad({ w: t('U8', [1], ['0', '1']) }, 1, 'offsets', /not a pair/, 'w');
  await bad({ w: t('U8', [1], [0.5, 1.5]) }, 1, 'offsets', /not a pair/, 'w');
  await bad({ w: t('U8', [1], [1, 0]) }, 1, 'offsets', /reversed/, 'w');
  await bad({ w: t('U8', [4], [0, 4]) }, 2, 'offsets', /run past the end of the data \(2 bytes\)/, 'w');
  await bad({ a: t('U8', [4], [0, 4]), b: t('U8', [4], [2, 6]) }, 6, 'offsets', /overlaps the previous tensor/, 'b');
  await bad({ a: t('U8', [2], [0, 2]), b: t('U8', [2], [4, 6]) }, 6, 'offsets', /gap of 2 bytes/, 'b');
  await bad({ a: t('U8', [2], [2, 4]) }, 4, 'offsets', /gap of 2 bytes/, 'a');
  await bad({ a: t('U8', [2], [0, 2]) }, 5, 'offsets', /cover 2 bytes but the file holds 5 data bytes/);
});

test('a file that shrinks after opening gives an io error naming the tensor', async () => {
  const p = file(rawFile({ w: t('U8', [64], [0, 64]) }, 64));
  const ck = await openCheckpoint(p);
  fs.truncateSync(p, fs.statSync(p).size - 10);
  await rejects(readTensorBytes(ck.tensors[0]), 'io', p, /file ended while reading/, 'w');
  fs.rmSync(p);
  await rejects(readTensorBytes(ck.tensors[0]), 'not-found', p, /does not exist/, 'w');
});

test('names with control characters or huge length stay one short line', async () => {
  const name = 'evil\nname\u2028' + 'x'.repeat(10000);
  const e = await bad({ [name]: t('U8', [1], [0, 2]) }, 2, 'byte-length', /holds 2 bytes/);
  assert.equal(e.tensor, name);
  assert.ok(!e.message.includes('\n') && !e.message.includes('\u2028'));
  assert.ok(e.message.length < 600, `${e.message.length}`);
});

test('missing paths, folders and non-files', async () => {
  const missing = dir + '/nope.safetensors';
  await rejects(openCheckpoint(missing), 'not-found', missing, /does not exist/);
  const empty = tempDir();
  await rejects(openCheckpoint(empty), 'not-safetensors', empty, /holds no \.safetensors file/);
  const named = tempDir() + '/d.safetensors';
  fs.mkdirSync(named);
  fs.writeFileSync(named + '/x.txt', '');
  await rejects(openCheckpoint(named), 'not-safetensors', named, /holds no/);
});
