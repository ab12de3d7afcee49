// Sharded Hugging Face folders read as one model; hostile indexes (missing, foreign,
// `..`, absolute, symlinked-out shards) and pickle checkpoints are refused by name.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  INDEX_FILE,
  openCheckpoint,
  readTensorBytes,
  writeShardedCheckpoint,
  ShardSpec,
  DTYPE_SIZE,
} from '../../server/src/checkpoint';
import { tempDir } from '../helpers';
import { put, rawFile, rejects } from './checkpoint-raw';

const u8 = (name: string, n: number, begin: number) =>
  [name, { dtype: 'U8', shape: [n], data_offsets: [begin, begin + n] }] as const;
const shardBytes = (names: string[], fill: number) =>
  rawFile(Object.fromEntries(names.map((n, i) => u8(n, 4, 4 * i))), new Uint8Array(4 * names.length).fill(fill));

function shardedFolder(
  weightMap: Record<string, unknown>,
  shards: Record<string, string[]>,
  extra: object = {},
): string {
  const dir = tempDir('loftq-sharded-');
  Object.entries(shards).forEach(([f, names], i) => put(dir, f, shardBytes(names, i + 1)));
  put(dir, INDEX_FILE, JSON.stringify({ metadata: { total_size: 1 }, weight_map: weightMap, ...extra }));
  return dir;
}

test('a sharded folder (handmade) reads as one model, shard by shard', async () => {
  const dir = shardedFolder(
    {
      a: 'model-00001-of-00002.safetensors',
      b: 'model-00001-of-00002.safetensors',
      c: 'model-00002-of-00002.safetensors',
    },
    { 'model-00001-of-00002.safetensors': ['a', 'b'], 'model-00002-of-00002.safetensors': ['c'] },
  );
  for (const p of [dir, path.join(dir, INDEX_FILE)]) {
    const ck = await openCheckpoint(p);
    assert.equal(ck.kind, 'sharded');
    assert.equal(ck.folder, dir);
    assert.deepEqual(
      ck.tensors.map((t) => t.name),
      ['a', 'b', 'c'],
    );
    assert.deepEqual(
      ck.files.map((f) => path.basename(f)),
      ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'],
    );
    assert.deepEqual(ck.metadata, { total_size: '1' });
    assert.deepEqual([...(await readTensorBytes(ck.byName.get('c')!))], [2, 2, 2, 2]);
    assert.deepEqual([...(await readTensorBytes(ck.byName.get('b')!))], [1, 1, 1, 1]);
  }
});

test('writeShardedCheckpoint writes shards and an index that read back as the same model', async () => {
  const dir = tempDir();
  const shards: ShardSpec[] = [
    {
      file: 'model-00001-of-00002.safetensors',
      tensors: [
        { name: 'x.weight', dtype: 'BF16', shape: [4, 3] },
        { name: '__proto__', dtype: 'I64', shape: [2] },
      ],
      metadata: { format: 'pt' },
    },
    { file: 'model-00002-of-00002.safetensors', tensors: [{ name: 'y', dtype: 'F8_E4M3', shape: [5] }] },
  ];
  const data = new Map<string, Uint8Array>();
  const res = await writeShardedCheckpoint(
    dir,
    shards,
    (t) => {
      const b = new Uint8Array(t.shape.reduce((a, c) => a * c, 1) * DTYPE_SIZE[t.dtype]).map(
        (_, i) => (i * 7 + t.name.length) & 0xff,
      );
      data.set(t.name, b);
      return b;
    },
    { indexMetadata: { source: 'test' } },
  );
  assert.deepEqual(fs.readdirSync(dir).sort(), [INDEX_FILE, ...shards.map((s) => s.file)].sort());
  const index = JSON.parse(fs.readFileSync(path.join(dir, INDEX_FILE), 'utf8'));
  assert.equal(index.metadata.total_size, 24 + 16 + 5);
  assert.equal(res.totalSize, 45);
  assert.equal(index.metadata.source, 'test');
  assert.equal(Object.getOwnPropertyDescriptor(index.weight_map, '__proto__')?.value, shards[0].file);
  const ck = await openCheckpoint(dir);
  assert.deepEqual(
    ck.tensors.map((t) => t.name),
    ['x.weight', '__proto__', 'y'],
  );
  for (const t of ck.tensors) assert.deepEqual(await readTensorBytes(t), data.get(t.name));
  assert.deepEqual(ck.headers[0].metadata, { format: 'pt' });
});

test('shard names that leave the folder are refused before anything is opened', async () => {
  const outside = tempDir();
  put(outside, 'x.safetensors', shardBytes(['a'], 1));
  for (const name of [
    '../x.safetensors',
    `${outside}/x.safetensors`,
    'sub/x.safetensors',
    '..',
    'a\\..\\x.safetensors',
    './x.safetensors',
  ]) {
    const dir = shardedFolder({ a: name }, {});
    await rejects(openCheckpoint(dir), 'unsafe-path', path.join(dir, INDEX_FILE), /not a plain file name/);
  }
  // A plain name that is a symlink out of the folder is caught by resolving it.
  const dir = shardedFolder({ a: 'link.safetensors' }, {});
  fs.symlinkSync(path.join(outside, 'x.safetensors'), path.join(dir, 'link.safetensors'));
  await rejects(openCheckpoint(dir), 'unsafe-path', path.join(dir, INDEX_FILE), /outside the checkpoint folder/);
  // A symlink to a shard inside the folder is fine.
  const ok = shardedFolder({ a: 'link.safetensors' }, { 'real.safetensors': ['a'] });
  fs.symlinkSync('real.safetensors', path.join(ok, 'link.safetensors'));
  assert.deepEqual(
    (await openCheckpoint(ok)).tensors.map((t) => t.name),
    ['a'],
  );
});

test('missing shards, foreign tensors and unlisted tensors are named', async () => {
  let dir = shardedFolder({ a: 's1.safetensors', b: 's2.safetensors' }, { 's1.safetensors': ['a'] });
  await rejects(
    openCheckpoint(dir),
    'not-found',
    path.join(dir, 's2.safetensors'),
    /listed in model\.safetensors\.index\.json but does not exist/,
  );
  dir = shardedFolder({ a: 's1.safetensors' }, { 's1.safetensors': ['a', 'intruder'] });
  await rejects(
    openCheckpoint(dir),
    'index',
    path.join(dir, INDEX_FILE),
    /shard 's1.safetensors' holds tensor 'intruder', which the weight_map does not list/,
  );
  dir = shardedFolder({ a: 's1.safetensors', b: 's1.safetensors' }, { 's1.safetensors': ['a'] });
  await rejects(
    openCheckpoint(dir),
    'index',
    path.join(dir, INDEX_FILE),
    /puts tensor 'b' in 's1.safetensors', which does not hold it/,
  );
  dir = shardedFolder(
    { a: 's1.safetensors', b: 's2.safetensors' },
    { 's1.safetensors': ['a', 'b'], 's2.safetensors': ['b'] },
  );
  await rejects(
    openCheckpoint(dir),
    'index',
    path.join(dir, INDEX_FILE),
    /holds tensor 'b', which the weight_map puts in 's2.safetensors'/,
  );
  // A broken shard is reported against the shard itself.
  dir = shardedFolder({ a: 's1.safetensors' }, {});
  const shard = put(dir, 's1.safetensors', rawFile('{"a":{"dtype":"X","shape":[1],"data_offsets":[0,1]}}', 1));
  await rejects(openCheckpoint(dir), 'dtype', shard, /unknown dtype/, 'a');
});

test('malformed indexes are refused', async () => {
  const cases: [string, string, RegExp][] = [
    ['{"weight_map": {', 'index', /not valid JSON/],
    ['[1]', 'index', /not a JSON object/],
    ['{"metadata": {}}', 'index', /weight_map is undefined, not an object/],
    ['{"weight_map": ["a"]}', 'index', /weight_map is \["a"\]/],
    ['{"weight_map": {"a": 3}}', 'index', /weight_map holds 3 where a shard file name belongs/],
    ['{"weight_map": {"a": "x.txt"}}', 'index', /not a \.safetensors file/],
    ['{"weight_map": {}, "metadata": 5}', 'index', /metadata is 5/],
    [
      '{"weight_map": {"a": "s.safetensors", "a": "t.safetensors"}}',
      'duplicate-key',
      /key 'a' appears twice in weight_map/,
    ],
  ];
  for (const [text, kind, problem] of cases) {
    const dir = tempDir();
    const index = put(dir, INDEX_FILE, text);
    await rejects(openCheckpoint(dir), kind, index, problem);
  }
  const two = tempDir();
  put(two, 'a.safetensors', shardBytes(['a'], 1));
  put(two, 'b.safetensors', shardBytes(['b'], 1));
  await rejects(
    openCheckpoint(two),
    'index',
    two,
    /holds 2 \.safetensors files but no model\.safetensors\.index\.json/,
  );
});

test('pickle checkpoints are refused by name and by magic bytes, never opened as data', async () => {
  const dir = tempDir();
  const pickle = new Uint8Array([0x80, 0x02, 0x7d, 0x71, 0x00, 0x2e, 0, 0, 0, 0]);
  const zip = new Uint8Array([0x50, 0x4b, 0x03, 0x04, 0x14, 0, 0, 0, 0, 0]);
  for (const name of ['pytorch_model.bin', 'model.pt', 'model.pth', 'last.ckpt', 'model.PT']) {
    const p = put(dir, name, pickle);
    const e = await rejects(
      openCheckpoint(p),
      'pickle',
      p,
      /pickle checkpoint.*never opened.*convert it to safetensors.*safe_serialization=True/,
    );
    assert.ok(!e.message.includes('\n'));
  }
  for (const [name, bytes] of [
    ['p2.safetensors', pickle],
    ['p5.safetensors', new Uint8Array([0x80, 0x05, 0x95, 0, 0, 0, 0, 0, 0])],
    ['zip.safetensors', zip],
  ] as const) {
    const p = put(dir, name, bytes);
    await rejects(openCheckpoint(p), 'pickle', p, /pickle checkpoint/);
  }
  // Header lengths 640, 896, 1152, 1408 begin with the bytes 80 02…80 05 of a pickle: such
  // safetensors files are still read (found by the fuzzer).
  for (const n of [640, 896, 1152, 1408]) {
    const text = JSON.stringify({ w: { dtype: 'U8', shape: [2], data_offsets: [0, 2] } });
    const p = put(dir, `len${n}.safetensors`, rawFile(text + ' '.repeat(n - text.length), new Uint8Array([1, 2])));
    assert.equal(fs.readFileSync(p)[0], 0x80);
    assert.deepEqual([...(await readTensorBytes((await openCheckpoint(p)).tensors[0]))], [1, 2]);
  }
  // A folder holding only a pickle checkpoint (single or sharded) says so.
  const hf = tempDir();
  const bin = put(hf, 'pytorch_model.bin', zip);
  await rejects(openCheckpoint(hf), 'pickle', bin, /convert it to safetensors/);
  const hf2 = tempDir();
  const idx = put(hf2, 'pytorch_model.bin.index.json', '{"weight_map": {"a": "pytorch_model-00001-of-00002.bin"}}');
  await rejects(openCheckpoint(hf2), 'pickle', idx, /pickle/);
  await rejects(openCheckpoint(idx), 'pickle', idx, /pickle/);
  // An index whose shards are pickles.
  const hf3 = tempDir();
  put(hf3, INDEX_FILE, '{"weight_map": {"a": "pytorch_model-00001.bin"}}');
  await rejects(openCheckpoint(hf3), 'pickle', path.join(hf3, 'pytorch_model-00001.bin'), /pickle/);
});
