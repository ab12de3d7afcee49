// Mutations of sharded checkpoints: a folder of shards plus model.safetensors.index.json
// whose weight_map points at missing, foreign, escaping or pickle files, or is malformed;
// or a valid index over a shard that is itself mutated.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { INDEX_FILE } from '../../checkpoint';
import { dataOf, entriesOf, fileBytes, FuzzModel, serializeEntries } from './model';
import { Ctx, Mutator, SINGLE_FILE_MUTATORS, writeCase } from './mutations';
import { Rng } from './rng';

interface Layout {
  shards: { file: string; model: FuzzModel }[];
  weightMap: [string, string][];
}

function split(rng: Rng, model: FuzzModel): Layout {
  const k = Math.min(model.tensors.length, rng.int(1, 3));
  const shards = Array.from({ length: k }, (_, i) => ({
    file: `model-${String(i + 1).padStart(5, '0')}-of-${String(k).padStart(5, '0')}.safetensors`,
    model: { tensors: [] } as FuzzModel,
  }));
  model.tensors.forEach((t, i) => shards[i % k].model.tensors.push(t));
  return { shards, weightMap: shards.flatMap((s) => s.model.tensors.map((t) => [t.name, s.file] as [string, string])) };
}

async function writeLayout(dir: string, l: Layout, indexText?: string, skip?: string): Promise<string> {
  for (const s of l.shards)
    if (s.file !== skip) await writeCase(dir, fileBytes(serializeEntries(entriesOf(s.model)), dataOf(s.model)), s.file);
  await writeCase(
    dir,
    new TextEncoder().encode(
      indexText ??
        serializeEntries([
          ['metadata', { total_size: 0 }],
          ['weight_map', Object.fromEntries(l.weightMap)],
        ]),
    ),
    INDEX_FILE,
  );
  return dir;
}

function indexWith(l: Layout, weightMap: unknown, extra = ''): string {
  const map = typeof weightMap === 'string' ? weightMap : JSON.stringify(weightMap);
  return `{"metadata":{"total_size":1}${extra},"weight_map":${map}}`;
}

const sharded = (name: string, make: (c: Ctx, l: Layout) => Promise<string>): Mutator => ({
  name,
  make: (c) => make(c, split(c.rng, c.model)),
});

export const SHARDED_MUTATORS: Mutator[] = [
  sharded('sharded-valid', ({ dir }, l) => writeLayout(dir, l)),
  sharded('sharded-missing-shard', ({ rng, dir }, l) => writeLayout(dir, l, undefined, rng.pick(l.shards).file)),
  sharded('sharded-foreign-tensor', async ({ rng, dir }, l) => {
    l.weightMap.splice(rng.int(0, l.weightMap.length - 1), 1);
    return writeLayout(dir, l);
  }),
  sharded('sharded-wrong-shard', async ({ rng, dir }, l) => {
    const i = rng.int(0, l.weightMap.length - 1);
    l.weightMap[i] = [l.weightMap[i][0], rng.pick(['other.safetensors', ...l.shards.map((s) => s.file)])];
    return writeLayout(dir, l);
  }),
  sharded('sharded-escaping-name', async ({ rng, dir }, l) => {
    const outside = path.join(path.dirname(dir), `outside-${path.basename(dir)}.safetensors`);
    await fsp.copyFile(await writeLayout(dir, l).then(() => path.join(dir, l.shards[0].file)), outside);
    const bad = rng.pick([
      '../x.safetensors',
      `../${path.basename(outside)}`,
      outside,
      'sub/x.safetensors',
      '..',
      '.',
      '',
      'a\\b.safetensors',
      'x\0.safetensors',
      './' + l.shards[0].file,
    ]);
    l.weightMap[0] = [l.weightMap[0][0], bad];
    return writeLayout(dir, l);
  }),
  sharded('sharded-symlink-out', async ({ dir }, l) => {
    await writeLayout(dir, l);
    const outside = path.join(path.dirname(dir), `outside-${path.basename(dir)}.safetensors`);
    await fsp.rename(path.join(dir, l.shards[0].file), outside);
    await fsp.symlink(outside, path.join(dir, l.shards[0].file));
    return dir;
  }),
  sharded('sharded-pickle-shard', ({ rng, dir }, l) => {
    l.weightMap[0] = [l.weightMap[0][0], rng.pick(['pytorch_model-00001-of-00002.bin', 'model.pt'])];
    return writeLayout(dir, l);
  }),
  sharded('sharded-bad-index', ({ rng, dir }, l) =>
    writeLayout(
      dir,
      l,
      rng.pick([
        '',
        '{',
        '[]',
        'null',
        '{"weight_map": 5}',
        '{"weight_map": []}',
        '{"weight_map": null}',
        '{"metadata": 1, "weight_map": {}}',
        indexWith(l, '{"a": 1}'),
        indexWith(l, '{"a": "x.safetensors", "a": "y.safetensors"}'),
        indexWith(l, Object.fromEntries(l.weightMap)).slice(0, -3),
        indexWith(l, Object.fromEntries(l.weightMap), ',"metadata":{}'),
        '\uFEFF' + indexWith(l, Object.fromEntries(l.weightMap)),
      ]),
    ),
  ),
  sharded('sharded-mutated-shard', async (c, l) => {
    await writeLayout(c.dir, l);
    const shard = c.rng.pick(l.shards);
    const sub = path.join(c.dir, 'scratch');
    await fsp.mkdir(sub);
    const m = c.rng.pick(SINGLE_FILE_MUTATORS.filter((x) => !x.name.startsWith('pickle-name')));
    const made = await m.make({ ...c, model: shard.model, dir: sub });
    await fsp.rename(made, path.join(c.dir, shard.file));
    await fsp.rm(sub, { recursive: true, force: true });
    return c.dir;
  }),
];
