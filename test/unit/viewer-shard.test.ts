// Which sharded checkpoint a .safetensors file belongs to (loftq/inspect's `shard`: the viewer's
// note and its whole-checkpoint Quantize), and which file holds a tensor (the heatmap's "Show in
// viewer", asked of the server through the client's reads — here the engine function the server
// calls, on real files).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { shardOf } from '../../server/src/engine/shardOf';
import { inspectWithShard } from '../../server/src/engine/inspect';
import { encodeHeader, openCheckpoint } from '../../server/src/checkpoint';
import { fileHolding, setServerReads } from '../../client/src/reports';
import { tempDir } from '../helpers';

function folder(weightMap: Record<string, string>, files: string[]): string {
  const dir = tempDir('loftq-shard-');
  const index = JSON.stringify({ metadata: {}, weight_map: weightMap });
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), index);
  for (const f of files) fs.writeFileSync(path.join(dir, f), '');
  return dir;
}

test('a shard knows its index, its position among the shards (natural order) and the tensor count', async () => {
  const shards = Array.from({ length: 11 }, (_, i) => `part-${i + 1}.safetensors`);
  const map = Object.fromEntries(
    shards.flatMap((s, i) => [
      [`a.${i}.weight`, s],
      [`b.${i}.weight`, s],
    ]),
  );
  const dir = folder(map, [...shards, 'other.safetensors']);
  // part-2 is the second shard, not the fourth as in plain string order (1, 10, 11, 2).
  assert.deepEqual(await shardOf(path.join(dir, 'part-2.safetensors')), {
    index: path.join(dir, 'model.safetensors.index.json'),
    number: 2,
    of: 11,
    tensors: 22,
  });
  assert.equal((await shardOf(path.join(dir, 'part-11.safetensors')))?.number, 11);
  assert.equal(await shardOf(path.join(dir, 'other.safetensors')), undefined, 'a file the index does not list');
});

test('no index, a malformed one, or a single-shard index: not a shard', async () => {
  const dir = tempDir('loftq-shard-');
  fs.writeFileSync(path.join(dir, 'model.safetensors'), '');
  assert.equal(await shardOf(path.join(dir, 'model.safetensors')), undefined);
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{ not json');
  assert.equal(await shardOf(path.join(dir, 'model.safetensors')), undefined);
  const one = folder({ 'a.weight': 'model.safetensors' }, ['model.safetensors']);
  assert.equal(await shardOf(path.join(one, 'model.safetensors')), undefined);
});

/** A real .safetensors file holding F32 tensors of 2 values each. */
function writeShard(file: string, names: string[]): void {
  const header = encodeHeader(names.map((name) => ({ name, dtype: 'F32' as const, shape: [2] })));
  fs.writeFileSync(file, Buffer.concat([header, Buffer.alloc(8 * names.length)]));
}

test("the file holding a tensor, by the server's inspect: a file itself, model.safetensors, or its shard", async () => {
  setServerReads(
    Promise.resolve({
      readReport: async () => null,
      inspect: async (checkpoint: string) => inspectWithShard(await openCheckpoint(checkpoint)),
    }),
  );
  const sharded = tempDir('loftq-shard-');
  writeShard(path.join(sharded, 's1.safetensors'), ['a.weight']);
  writeShard(path.join(sharded, 's2.safetensors'), ['b.weight', 'c.weight']);
  const map = { 'a.weight': 's1.safetensors', 'b.weight': 's2.safetensors', 'c.weight': 's2.safetensors' };
  fs.writeFileSync(path.join(sharded, 'model.safetensors.index.json'), JSON.stringify({ weight_map: map }));
  assert.equal(await fileHolding(sharded, 'b.weight'), path.join(sharded, 's2.safetensors'));
  assert.equal(await fileHolding(sharded, 'missing.weight'), undefined);
  const s1 = path.join(sharded, 's1.safetensors');
  assert.equal(await fileHolding(s1, 'a.weight'), s1);
  assert.equal(await fileHolding(s1, 'b.weight'), undefined, "a shard does not hold its siblings' tensors");
  assert.deepEqual((await inspectWithShard(await openCheckpoint(s1))).shard?.number, 1);

  const single = tempDir('loftq-shard-');
  writeShard(path.join(single, 'model.safetensors'), ['x.weight']);
  assert.equal(await fileHolding(single, 'x.weight'), path.join(single, 'model.safetensors'));
  assert.equal((await inspectWithShard(await openCheckpoint(single))).shard, undefined, 'a folder is not a shard');

  // An index naming a shard outside its folder: the checkpoint is refused, nothing is found.
  const escape = tempDir('loftq-shard-');
  writeShard(path.join(escape, 's1.safetensors'), ['a.weight']);
  const bad = { weight_map: { 'a.weight': 's1.safetensors', 'c.weight': '../escape.safetensors' } };
  fs.writeFileSync(path.join(escape, 'model.safetensors.index.json'), JSON.stringify(bad));
  assert.equal(await fileHolding(escape, 'a.weight'), undefined);
  assert.equal(await fileHolding(path.join(tempDir('loftq-shard-'), 'gone'), 'a.weight'), undefined);
});
