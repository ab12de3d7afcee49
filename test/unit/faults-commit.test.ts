// A run over an older result made with other settings (bits 4 → bits 2), killed (-9),
// cancelled (SIGINT/SIGTERM) or out of file size at any moment, the write phase included:
// the folder holds the old complete result, the new one, or a resumable journal with no
// old file a loader could take beside a new one — for single-file and sharded checkpoints.
// faults-oracle.ts's judgeAmong judges each folder against uninterrupted runs of both.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint, readTensorBytes, writeShardedCheckpoint } from '../../server/src/checkpoint';
import { Rng } from '../../server/src/tools/fuzz/rng';
import { repoRoot, tempDir } from '../helpers';
import { judgeAmong, listTree, Reference } from './faults-oracle';

const CLI = path.join(repoRoot, 'dist', 'cli.js');
const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const COMMON = ['--iters', '1', '--workers', '1', '--backend', 'cpu'];
const OLD = ['--bits', '4', '--rank', '4', ...COMMON];
const NEW = ['--bits', '2', '--rank', '8', ...COMMON];

/** stories260k split into three shards with an index (tensors copied byte for byte). */
async function shardedStories(): Promise<string> {
  const dir = tempDir('loftq-commit-sharded-');
  const ck = await openCheckpoint(path.join(STORIES, 'model.safetensors'));
  const third = ck.tensors.reduce((a, t) => a + t.byteLength, 0) / 3;
  const groups: (typeof ck.tensors)[] = [[]];
  let bytes = 0;
  for (const t of ck.tensors) {
    if (bytes > third * groups.length && groups.length < 3) groups.push([]);
    groups[groups.length - 1].push(t);
    bytes += t.byteLength;
  }
  const shards = groups.map((g, i) => ({
    file: `model-0000${i + 1}-of-0000${groups.length}.safetensors`,
    tensors: g.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })),
  }));
  await writeShardedCheckpoint(dir, shards, (t) => readTensorBytes(ck.byName.get(t.name)!));
  fs.copyFileSync(path.join(STORIES, 'config.json'), path.join(dir, 'config.json'));
  return dir;
}

interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  inWrite: boolean;
}

/** Runs the CLI and sends `sig` `ms` after it starts — or, with `afterWrite`, `ms` after it
 *  announces the write phase ("writing output files…"). */
function runAndSignal(
  input: string,
  out: string,
  args: string[],
  sig: NodeJS.Signals,
  ms: number,
  afterWrite: boolean,
): Promise<Outcome> {
  return new Promise((resolve) => {
    const argv = [CLI, 'quantize', input, '--out', out, ...args];
    const child = spawn(process.execPath, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '',
      inWrite = false,
      timer: NodeJS.Timeout | undefined;
    const fire = () => {
      timer = setTimeout(() => child.kill(sig), ms);
    };
    child.stderr!.on('data', (d) => {
      stderr += d;
      if (afterWrite && !inWrite && stderr.includes('writing output files')) {
        inWrite = true;
        fire();
      }
    });
    if (!afterWrite) fire();
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stderr, inWrite });
    });
  });
}

/** Like runAndSignal with the signal sent once the first matrix is done: in compute, whatever
 *  the machine's load does to start-up time (which a fixed delay would race). */
function signalInCompute(input: string, out: string, args: string[], sig: NodeJS.Signals): Promise<Outcome> {
  return new Promise((resolve) => {
    const argv = [CLI, 'quantize', input, '--out', out, ...args];
    const child = spawn(process.execPath, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '',
      sent = false;
    child.stderr!.on('data', (d) => {
      stderr += d;
      if (!sent && /^\[1\//m.test(stderr)) {
        sent = true;
        child.kill(sig);
      }
    });
    child.on('exit', (code, signal) => resolve({ code, signal, stderr, inWrite: false }));
  });
}

function complete(input: string, out: string, args: string[]): void {
  const argv = [CLI, 'quantize', input, '--out', out, ...args, '--quiet'];
  const r = spawnSync(process.execPath, argv, { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

let cases: { name: string; input: string; refs: Reference[]; runMs: number }[] | undefined;
async function setup() {
  if (cases) return cases;
  cases = [];
  for (const [name, input] of [
    ['single file', STORIES],
    ['sharded', await shardedStories()],
  ] as const) {
    const refs: Reference[] = [];
    let runMs = 0;
    for (const args of [OLD, NEW]) {
      const out = path.join(tempDir('loftq-commit-ref-'), 'out');
      const t0 = performance.now();
      complete(input, out, args);
      runMs = Math.max(runMs, performance.now() - t0);
      refs.push(new Reference(out, input));
    }
    cases.push({ name, input, refs, runMs });
  }
  return cases;
}

test('kill -9 at 50 seeded points over an older result (bits 4 → 2), write phase included: never a mix', async () => {
  const all = await setup();
  const counts: Record<string, number> = {};
  let writeKills = 0;
  await Promise.all(
    all.map(async (c, ci) => {
      const rng = Rng.forCase(13, ci);
      const out = path.join(tempDir('loftq-commit-kill-'), 'out');
      fs.cpSync(c.refs[0].dir, out, { recursive: true });
      for (let t = 0; t < 25; t++) {
        const args = rng.next() < 0.7 ? NEW : OLD;
        const inWrite = rng.next() < 0.6;
        const delay = inWrite ? rng.next() * 30 : rng.next() * 1.1 * c.runMs;
        const r = await runAndSignal(c.input, out, args, 'SIGKILL', delay, inWrite);
        if (r.signal === 'SIGKILL' && r.inWrite) writeKills++;
        if (r.signal !== 'SIGKILL') assert.equal(r.code, 0, `${c.name} trial ${t}: ${r.stderr}`);
        const phase = r.inWrite ? ', in the write phase' : '';
        const trial = `${c.name} trial ${t} (${args === NEW ? 'new' : 'old'} settings, ${r.signal ?? r.code}${phase})`;
        const { state, run } = await judgeAmong(out, c.refs).catch((e: Error) => assert.fail(`${trial}: ${e.message}`));
        const key = `${state}${run === undefined ? '' : run === 0 ? ':old' : ':new'}`;
        counts[key] = (counts[key] ?? 0) + 1;
      }
      complete(c.input, out, NEW.concat('--quiet'));
      assert.deepEqual(await judgeAmong(out, c.refs), { state: 'complete', run: 1 });
      assert.deepEqual(
        listTree(out),
        [...c.refs[1].files.keys()].sort(),
        `${c.name}: the finished rerun leaves exactly the new files ` +
          '(no old shard, adapter, temp file, lock or journal)',
      );
    }),
  );
  console.log(`kill -9 over an older result: 50 trials, ${writeKills} in the write phase; ${JSON.stringify(counts)}`);
  assert.ok(writeKills >= 15, `only ${writeKills} kills landed in the write phase`);
  // A journal state needs a kill inside the commit's renames (a few ms), so it is counted, not required.
  assert.ok((counts['complete:old'] ?? 0) >= 1 && (counts['complete:new'] ?? 0) >= 1, JSON.stringify(counts));
});

test('SIGINT/SIGTERM in the write phase and in compute: an old result stays whole, a fresh folder goes', async () => {
  const all = await setup();
  for (const c of all) {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      for (const [ms, afterWrite] of [
        [0, true],
        [3, true],
        [8, true],
        [0, false],
      ] as const) {
        for (const fresh of [false, true]) {
          const out = path.join(tempDir('loftq-commit-cancel-'), 'out');
          if (!fresh) fs.cpSync(c.refs[0].dir, out, { recursive: true });
          const r = afterWrite
            ? await runAndSignal(c.input, out, NEW, sig, ms, true)
            : await signalInCompute(c.input, out, NEW, sig);
          const said = r.stderr
            .split('\n')
            .filter((l) => l.startsWith('loftq'))
            .join(' | ');
          const when = afterWrite ? 'the write phase began' : 'the first matrix';
          const where = fresh ? 'fresh' : 'over an old result';
          const what = `${c.name}, ${sig} ${ms} ms after ${when}, ${where}: ${r.code ?? r.signal}; ${said}`;
          const judged = await judgeAmong(out, c.refs).catch((e: Error) => assert.fail(`${what}: ${e.message}`));
          if (r.code === 0) {
            // The signal came once the commit (renames only) had begun: the new result is whole.
            assert.deepEqual(judged, { state: 'complete', run: 1 }, what);
            continue;
          }
          assert.equal(r.code, 130, what);
          if (fresh) assert.equal(fs.existsSync(out), false, what);
          else {
            assert.deepEqual(judged, { state: 'complete', run: 0 }, what);
            const want = [...c.refs[0].files.keys()].sort();
            assert.deepEqual(listTree(out), want, `${what}: no journal, lock or temp file is left`);
          }
        }
      }
    }
  }
});

test('file size limit in the write phase (bits 2 r32 over bits 4, sharded): one line, old result whole', async () => {
  const c = (await setup())[1];
  const out = path.join(tempDir('loftq-commit-efbig-'), 'out');
  fs.cpSync(c.refs[0].dir, out, { recursive: true });
  // 1200 blocks (600 KiB under dash's 512-byte blocks, 1.2 MiB under bash's): every shard and
  // journal entry fits, the rank-32 adapter file (750 KB) does not — the failure comes late.
  const argv = [CLI, 'quantize', c.input, '--out', out, '--bits', '2', '--rank', '32', ...COMMON, '--quiet'];
  const sh = ['-c', 'ulimit -f 1200 && exec "$@"', 'sh', process.execPath, ...argv];
  const r = spawnSync('/bin/sh', sh, { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 1, r.stderr);
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('loftq: '));
  assert.equal(lines.length, 1, r.stderr);
  const efbig = /loftq_init\/adapter_model\.safetensors: cannot be written: file size limit reached \(EFBIG\)$/;
  assert.match(lines[0], efbig);
  const judged = await judgeAmong(out, c.refs);
  assert.deepEqual(judged, { state: 'complete', run: 0 }, 'the bits-4 result is whole, report included');
  const left = listTree(out).filter((f) => !f.startsWith('.loftq-journal/'));
  assert.deepEqual(left, [...c.refs[0].files.keys()].sort(), 'no temp file or lock');
});
