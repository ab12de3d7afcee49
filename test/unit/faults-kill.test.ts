// kill -9 of `loftq quantize` at random points (seeded): after each kill the output folder
// holds the previous complete result, a resumable journal, or nothing — never a file that
// parses but is wrong (faults-oracle.ts judges it against one uninterrupted reference
// run). Trials run in chains over one folder each: the next trial is the rerun of the
// killed one (same arguments), some kills land after completion (so the next trial starts
// from a complete previous result), and every chain ends with a run to completion that
// must give files identical to the reference and leave no temp file, lock or journal.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Rng } from '../../server/src/tools/fuzz/rng';
import { repoRoot, tempDir } from '../helpers';
import { judge, listTree, Reference, State } from './faults-oracle';

const CLI = path.join(repoRoot, 'dist', 'cli.js');
const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const args = (out: string) => [
  'quantize',
  STORIES,
  '--out',
  out,
  '--bits',
  '2',
  '--rank',
  '4',
  '--iters',
  '1',
  '--workers',
  '1',
  '--backend',
  'cpu',
  '--quiet',
];

/** Runs the CLI and SIGKILLs it after `delayMs`; resolves with its exit (code or signal). */
function runAndKill(
  out: string,
  delayMs: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args(out)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), delayMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stderr });
    });
  });
}

const KILL_CLI_52 =
  'kill -9 of the CLI at 52 random points: complete result, resumable journal or nothing; ' + 'reruns finish identical';

test(KILL_CLI_52, async () => {
  const refOut = path.join(tempDir('loftq-kill-ref-'), 'out');
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [CLI, ...args(refOut)], { encoding: 'utf8' });
  const runMs = performance.now() - t0;
  assert.equal(r.status, 0, r.stderr);
  const ref = new Reference(refOut, STORIES);
  const names = ref.report.matrices.map((m) => m.name);
  assert.equal(await judge(refOut, ref, names), 'complete'); // every relError of the reference agrees with its files

  const counts: Record<State, number> = { complete: 0, journal: 0, nothing: 0 };
  let killed = 0,
    withEntries = 0;
  const chain = async (c: number, trials: number) => {
    const rng = Rng.forCase(6, c); // one stream per chain: reproducible however the chains interleave
    const out = path.join(tempDir(`loftq-kill-${c}-`), 'out');
    // Half the chains start from a complete previous result.
    if (c % 2 === 1) fs.cpSync(refOut, out, { recursive: true });
    for (let t = 0; t < trials; t++) {
      const delay = rng.next() * 1.1 * runMs;
      const res = await runAndKill(out, delay);
      if (res.signal === 'SIGKILL') killed++;
      else assert.equal(res.code, 0, `trial ${c}.${t} (not killed) failed: ${res.stderr}`);
      const state = await judge(out, ref, [rng.pick(names), rng.pick(names)]);
      counts[state]++;
      if (listTree(out).some((f) => f.startsWith('.loftq-journal/') && f.endsWith('.safetensors'))) withEntries++;
    }
    const done = spawnSync(process.execPath, [CLI, ...args(out)], { encoding: 'utf8' });
    assert.equal(done.status, 0, done.stderr);
    assert.equal(await judge(out, ref), 'complete');
    assert.deepEqual(
      listTree(out),
      [...ref.files.keys()].sort(),
      'no temp file, lock or journal is left after a completed rerun',
    );
  };
  await Promise.all([0, 1].map((c) => chain(c, 26)));
  console.log(
    `kill -9 trials: 52 (${killed} killed, reference run ${runMs.toFixed(0)} ms); ` +
      `after them: ${JSON.stringify(counts)}, ${withEntries} with journal entries`,
  );
  assert.equal(counts.complete + counts.journal + counts.nothing, 52);
  assert.ok(killed >= 30, `only ${killed} trials were killed before finishing`);
  assert.ok(counts.journal >= 1 && counts.complete >= 1 && withEntries >= 1, JSON.stringify({ counts, withEntries }));
});
