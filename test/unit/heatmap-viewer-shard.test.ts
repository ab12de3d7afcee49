// Which sharded checkpoint a .safetensors file belongs to (the viewer's note and its
// whole-checkpoint Quantize), and which file holds a tensor (the heatmap's "Show in viewer").
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileHolding, findShard } from '../../client/src/viewer/shard';
import { tempDir } from '../helpers';

function folder(weightMap: Record<string, string>, files: string[]): string {
  const dir = tempDir('loftq-shard-');
  const index = JSON.stringify({ metadata: {}, weight_map: weightMap });
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), index);
  for (const f of files) fs.writeFileSync(path.join(dir, f), '');
  return dir;
}

test('a shard knows its index, its position among the shards (natural order) and the tensor count', () => {
  const shards = Array.from({ length: 11 }, (_, i) => `part-${i + 1}.safetensors`);
  const map = Object.fromEntries(
    shards.flatMap((s, i) => [
      [`a.${i}.weight`, s],
      [`b.${i}.weight`, s],
    ]),
  );
  const dir = folder(map, [...shards, 'other.safetensors']);
  // part-2 is the second shard, not the fourth as in plain string order (1, 10, 11, 2).
  assert.deepEqual(findShard(path.join(dir, 'part-2.safetensors')), {
    index: path.join(dir, 'model.safetensors.index.json'),
    number: 2,
    of: 11,
    tensors: 22,
  });
  assert.equal(findShard(path.join(dir, 'part-11.safetensors'))?.number, 11);
  assert.equal(findShard(path.join(dir, 'other.safetensors')), undefined, 'a file the index does not list');
});

test('no index, a malformed one, or a single-shard index: not a shard', () => {
  const dir = tempDir('loftq-shard-');
  fs.writeFileSync(path.join(dir, 'model.safetensors'), '');
  assert.equal(findShard(path.join(dir, 'model.safetensors')), undefined);
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{ not json');
  assert.equal(findShard(path.join(dir, 'model.safetensors')), undefined);
  const one = folder({ 'a.weight': 'model.safetensors' }, ['model.safetensors']);
  assert.equal(findShard(path.join(one, 'model.safetensors')), undefined);
});

test('the file holding a tensor: a file itself, model.safetensors, or the shard the index names', () => {
  const dir = folder(
    { 'a.weight': 's1.safetensors', 'b.weight': 's2.safetensors', 'c.weight': '../escape.safetensors' },
    ['s1.safetensors', 's2.safetensors'],
  );
  assert.equal(fileHolding(dir, 'b.weight'), path.join(dir, 's2.safetensors'));
  assert.equal(fileHolding(dir, 'missing.weight'), undefined);
  assert.equal(fileHolding(dir, 'c.weight'), undefined, 'a shard name outside the folder is refused');
  assert.equal(fileHolding(path.join(dir, 's1.safetensors'), 'anything'), path.join(dir, 's1.safetensors'));
  const single = tempDir('loftq-shard-');
  fs.writeFileSync(path.join(single, 'model.safetensors'), '');
  assert.equal(fileHolding(single, 'x.weight'), path.join(single, 'model.safetensors'));
});
