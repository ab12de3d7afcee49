// The checkpoint picker (Quantize / Analyze / Create loftq.json without an Explorer item): on real
// files — single-file models, a sharded checkpoint, a real LoftQ output with its adapter, a file
// whose header does not parse — only models are offered, in natural order, labelled; the rest is
// listed apart with what it is. Headers come from the engine functions the server's inspect runs.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { encodeHeader, openCheckpoint } from '../../server/src/checkpoint';
import { inspectWithShard } from '../../server/src/engine/inspect';
import { quantizeCheckpoint } from '../../server/src/engine/run';
import { Candidate, INDEX, markerOf, pickList, runFolderOf } from '../../client/src/checkpointKinds';
import { repoRoot, removeTree, tempDir } from '../helpers';

const STORIES = path.join(repoRoot, 'examples', 'stories260k');

function tinyModel(file: string, names: string[]): void {
  const header = encodeHeader(names.map((name) => ({ name, dtype: 'F32' as const, shape: [4, 2] })));
  fs.writeFileSync(file, Buffer.concat([header, Buffer.alloc(32 * names.length)]));
}

test('the picker offers models in natural order, labelled; outputs, adapters and unreadable files apart', async () => {
  const ws = tempDir('loftq-picker-');
  try {
    // model-2 before model-10 (plain string order puts 10 first).
    for (const n of ['model-10', 'model-2']) tinyModel(path.join(ws, `${n}.safetensors`), ['a.weight', 'b.weight']);
    const sharded = path.join(ws, 'big');
    fs.mkdirSync(sharded);
    const map: Record<string, string> = {};
    for (let i = 1; i <= 3; i++) {
      const shard = `model-0000${i}-of-00003.safetensors`;
      tinyModel(path.join(sharded, shard), [`layers.${i}.weight`]);
      map[`layers.${i}.weight`] = shard;
    }
    fs.writeFileSync(path.join(sharded, INDEX), JSON.stringify({ metadata: {}, weight_map: map }));
    fs.writeFileSync(path.join(ws, 'notes.safetensors'), 'not a checkpoint');
    // An analysis report beside models (`loftq analyze --report loftq-report.json`) does not make them outputs.
    fs.writeFileSync(path.join(ws, 'loftq-report.json'), '{}');
    const out = path.join(ws, 'stories-loftq');
    const { report } = await quantizeCheckpoint(STORIES, {
      out,
      settings: { bits: 2, rank: 2, iters: 1, quantizer: 'nf', blockSize: 64 },
      workers: 1,
    });

    // The files a workspace search finds: every .safetensors outside a sharded folder, and that folder.
    const walk = (d: string): string[] =>
      fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => {
        const p = path.join(d, e.name);
        return e.isDirectory() ? walk(p) : e.name.endsWith('.safetensors') ? [p] : [];
      });
    const found = [sharded, ...walk(ws).filter((f) => path.dirname(f) !== sharded)];
    const candidates: Candidate[] = await Promise.all(
      found.map(async (p) => {
        const isFolder = p === sharded;
        const marker = markerOf(p, isFolder, fs.existsSync);
        const c: Candidate = { path: p, isFolder, marker };
        // The report of the output folder (the adapter's: the folder above loftq_init/) names the checkpoint.
        if (marker) c.of = JSON.parse(fs.readFileSync(path.join(out, 'loftq-report.json'), 'utf8')).checkpoint;
        else if (!marker)
          c.header = await openCheckpoint(p).then(inspectWithShard, (e: Error) => ({ problem: e.message }));
        return c;
      }),
    );
    const rel = (p: string) => path.relative(ws, p).split(path.sep).join('/');
    const list = pickList(candidates, rel);
    assert.deepEqual(
      list.models.map((m) => [m.label, m.description]),
      [
        ['big', 'sharded checkpoint, 3 shards · 24 parameters'],
        ['model-2.safetensors', 'model · 16 parameters'],
        ['model-10.safetensors', 'model · 16 parameters'],
      ],
    );
    const stories = path.relative(ws, report.checkpoint).split(path.sep).join('/');
    const others = Object.fromEntries(list.others.map((o) => [o.label, o.description]));
    assert.equal(others['stories-loftq/model.safetensors'], `LoftQ output of ${stories}`);
    assert.equal(others['stories-loftq/loftq_init/adapter_model.safetensors'], `adapter of ${stories}, not a model`);
    // The reader's own line, without the path the label already shows.
    assert.match(others['notes.safetensors'], /^unreadable: header length \d+ exceeds the 100 MB limit$/);
    // Every file found is listed once, in one of the two groups.
    assert.equal(list.models.length + list.others.length, found.length);
  } finally {
    removeTree(ws);
  }
});

test("a marked path's run folder: an output's own, loftq_init/'s parent, none for a PEFT adapter elsewhere", () => {
  const out = path.join('w', 'model-loftq-nf2-r8');
  assert.equal(runFolderOf(path.join(out, 'model.safetensors'), false, 'output'), out);
  assert.equal(runFolderOf(out, true, 'output'), out);
  assert.equal(runFolderOf(path.join(out, 'loftq_init', 'adapter_model.safetensors'), false, 'adapter'), out);
  assert.equal(runFolderOf(path.join('w', 'peft', 'adapter_model.safetensors'), false, 'adapter'), undefined);
  assert.equal(runFolderOf(path.join('w', 'model.safetensors'), false, undefined), undefined);
});
