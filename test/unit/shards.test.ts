// Many machines: `quantize --shard i/3` in three concurrent processes, then `loftq merge`,
// gives byte-for-byte the files of one unsharded run — for a sharded BF16 checkpoint in
// separate shard folders (packed format) and for a single F32 file with every shard in one
// shared folder. Merge refuses shards of different runs and incomplete sets in one line.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fromFloat32, openCheckpoint, readTensorF32, writeShardedCheckpoint } from '../../server/src/checkpoint';
import { repoRoot, tempDir } from '../helpers';

const CLI = path.join(repoRoot, 'dist', 'cli.js');
const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const FAST = ['--iters', '2', '--workers', '1', '--quiet'];

function cli(...args: string[]): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args]);
    let stderr = '',
      stdout = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.stdout.on('data', (d) => (stdout += d));
    child.on('close', (code) => resolve({ code, stderr, stdout }));
  });
}

async function ok(...args: string[]) {
  const r = await cli(...args);
  assert.equal(r.code, 0, `loftq ${args.join(' ')}: ${r.stderr}`);
  return r;
}

function refused(args: string[], pattern: RegExp) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  assert.equal(r.status, 2, `exit code (stderr: ${r.stderr})`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line, got: ${r.stderr}`);
  assert.match(lines[0], pattern);
}

/** stories260K re-saved as BF16 in two safetensors files with an index. */
async function bf16ShardedCopy(): Promise<string> {
  const src = await openCheckpoint(STORIES);
  const dir = tempDir('loftq-shards-ck-');
  const half = Math.ceil(src.tensors.length / 2);
  const groups = [src.tensors.slice(0, half), src.tensors.slice(half)];
  await writeShardedCheckpoint(
    dir,
    groups.map((g, i) => ({
      file: `model-0000${i + 1}-of-00002.safetensors`,
      tensors: g.map((t) => ({ name: t.name, dtype: 'BF16' as const, shape: t.shape })),
    })),
    async (t) => fromFloat32('BF16', await readTensorF32(src.byName.get(t.name)!)),
  );
  fs.copyFileSync(path.join(STORIES, 'config.json'), path.join(dir, 'config.json'));
  return dir;
}

function filesUnder(dir: string, rel = ''): string[] {
  return fs
    .readdirSync(path.join(dir, rel), { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? filesUnder(dir, path.join(rel, e.name)) : [path.join(rel, e.name)]))
    .sort();
}

const withoutTimes = (file: string) => {
  const r = JSON.parse(fs.readFileSync(file, 'utf8'));
  delete r.totals.seconds;
  delete r.totals.phases;
  for (const m of r.matrices) {
    delete m.seconds;
    delete m.phases;
  }
  return r;
};

/** Same file list; every file byte-identical except the report, equal but for timings (seconds, phases). */
function assertSameRun(merged: string, single: string) {
  const files = filesUnder(single);
  assert.deepEqual(filesUnder(merged), files);
  assert.ok(
    files.includes(path.join('loftq_init', 'adapter_model.safetensors')) &&
      files.includes(path.join('loftq_init', 'adapter_config.json')),
  );
  for (const f of files) {
    if (f === 'loftq-report.json') continue;
    assert.ok(fs.readFileSync(path.join(merged, f)).equals(fs.readFileSync(path.join(single, f))), `${f} differs`);
  }
  const a = withoutTimes(path.join(merged, 'loftq-report.json'));
  const b = withoutTimes(path.join(single, 'loftq-report.json'));
  assert.ok(a.matrices.length > 10);
  assert.deepEqual(a, b);
}

/**
 * The unsharded run writes to `out`, then is moved aside: the adapter config names the
 * output folder, so the merge must target the same path to be byte-identical.
 */
async function referenceRun(ck: string, out: string, args: string[]): Promise<string> {
  await ok('quantize', ck, '--out', out, ...args);
  const ref = out + '-single';
  fs.renameSync(out, ref);
  return ref;
}

const shardDirs: string[] = [];
let bf16: string;
const args = ['--bits', '2', '--rank', '4', '--format', 'packed', ...FAST];

const THREE_SHARDS_MERGE =
  '3 concurrent shard processes (own folders) + loftq merge = one run: ' + 'sharded BF16 checkpoint, packed';

test(THREE_SHARDS_MERGE, async () => {
  bf16 = await bf16ShardedCopy();
  const base = tempDir('loftq-shards-');
  const out = path.join(base, 'merged');
  const single = await referenceRun(bf16, out, args);
  for (let i = 0; i < 3; i++) shardDirs.push(path.join(base, `shard${i}`));
  await Promise.all(shardDirs.map((d, i) => ok('quantize', bf16, '--out', d, '--shard', `${i}/3`, ...args)));
  // Each shard did a share of the work and wrote no output files of its own.
  const counts = shardDirs.map(
    (d) => fs.readdirSync(path.join(d, '.loftq-journal')).filter((f) => f.endsWith('.safetensors')).length,
  );
  assert.ok(
    counts.every((c) => c > 0),
    `entries per shard: ${counts}`,
  );
  for (const d of shardDirs)
    assert.ok(!fs.existsSync(path.join(d, 'loftq-report.json')) && !fs.existsSync(path.join(d, 'loftq_init')));
  await ok('merge', ...shardDirs, '--out', out, '--quiet');
  const files = filesUnder(out);
  assert.ok(
    files.includes('model.safetensors.index.json') && files.includes('model.packed.safetensors'),
    files.join(' '),
  );
  assertSameRun(out, single);
  assert.ok(!fs.existsSync(path.join(out, '.loftq-journal')), 'journal removed after merge');
});

test('3 shards writing into one shared folder, then loftq merge --out DIR in place = one run (F32 file)', async () => {
  const out = path.join(tempDir('loftq-shared-'), 'out');
  const single = await referenceRun(STORIES, out, ['--bits', '4', ...FAST]);
  await Promise.all(
    [0, 1, 2].map((i) => ok('quantize', STORIES, '--out', out, '--shard', `${i}/3`, '--bits', '4', ...FAST)),
  );
  assert.deepEqual(
    fs
      .readdirSync(path.join(out, '.loftq-journal'))
      .filter((f) => f.endsWith('.json'))
      .sort(),
    [0, 1, 2].map((i) => `shard-${i}-of-3.json`),
  );
  await ok('merge', '--out', out, '--quiet');
  assertSameRun(out, single);
});

test('merge refuses missing shards, shards of another run and another checkpoint with one line (exit 2)', async () => {
  assert.equal(shardDirs.length, 3, 'needs the shards of the first test');
  const out = path.join(tempDir('loftq-refuse-'), 'out');
  refused(['merge', shardDirs[0], shardDirs[2], '--out', out], /missing finished shard 1\/3 \(of 3\)/);
  refused(['merge', shardDirs[0], shardDirs[0], shardDirs[1], shardDirs[2], '--out', out], /shard 0\/3 is also in/);
  refused(['merge', tempDir(), '--out', out], /holds no shard results/);
  refused(['merge'], /'--out DIR' is required/);
  // Shard 1 run again with other settings: a different run.
  const other = path.join(path.dirname(out), 'other1');
  await ok(
    'quantize',
    bf16,
    '--out',
    other,
    '--shard',
    '1/3',
    '--bits',
    '3',
    '--rank',
    '4',
    '--format',
    'packed',
    ...FAST,
  );
  refused(
    ['merge', shardDirs[0], other, shardDirs[2], '--out', out],
    /shard 1\/3 differs from .* in settings: .*"bits":3/,
  );
  // Split 4 ways: a different shard count.
  const four = path.join(path.dirname(out), 'four3');
  await ok('quantize', bf16, '--out', four, '--shard', '3/4', ...args);
  refused(
    ['merge', shardDirs[0], shardDirs[1], shardDirs[2], four, '--out', out],
    /differs from .* in shard count: 4 vs 3/,
  );
  refused(
    ['merge', ...shardDirs, '--out', out, '--checkpoint', STORIES],
    /is not the checkpoint the shards were computed from/,
  );
  assert.ok(!fs.existsSync(out), 'a refused merge writes nothing');
  // A journal entry gone missing is named, and no output is left behind.
  const victim = shardDirs[1];
  const d = JSON.parse(fs.readFileSync(path.join(victim, '.loftq-journal', 'shard-1-of-3.json'), 'utf8'));
  const [name, entry] = Object.entries(d.entries as Record<string, string>)[0];
  fs.rmSync(path.join(victim, '.loftq-journal', entry));
  const r = spawnSync(process.execPath, [CLI, 'merge', ...shardDirs, '--out', out, '--quiet'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, new RegExp(entry));
  assert.ok(
    !fs.existsSync(path.join(out, 'loftq-report.json')) &&
      !fs.existsSync(path.join(out, 'model.safetensors.index.json')),
    `nothing assembled without ${name}`,
  );
});
