// The fuzz harness in CI: ≥ 1,000 seeded hostile checkpoints through the inspect path
// with zero crashes, hangs, missed rejections or unhandled rejections, every rejection a
// typed one-line error naming a file of the case. Also checks that the harness itself
// notices hangs and untyped errors, and that cases are reproducible.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { CaseResult, MUTATORS, runCase, runCases } from '../../server/src/tools/fuzz/runner';
import { CHECKPOINT_ERROR_KINDS } from '../../server/src/checkpoint';
import { repoRoot, tempDir } from '../helpers';

test('1,000 fuzz cases: no crash, hang, missed rejection or unhandled rejection', async () => {
  const root = tempDir('loftq-fuzz-test-');
  const results: CaseResult[] = [];
  const s = await runCases(0, 1000, { seed: 20240611, root, timeoutMs: 5000 }, (r) => results.push(r));
  const failures = results.filter((r) => r.outcome !== 'accepted' && r.outcome !== 'rejected');
  assert.deepEqual(failures, []);
  assert.equal(s.cases, 1000);
  assert.equal(s.crashes + s.hangs + s.missed + s.unhandledRejections, 0);
  assert.equal(s.accepted + s.rejected, 1000);
  // Every mutator ran, and the rejections span the error kinds.
  assert.deepEqual(Object.keys(s.byMutator).sort(), MUTATORS.map((m) => m.name).sort());
  for (const k of Object.keys(s.byKind)) assert.ok(CHECKPOINT_ERROR_KINDS.includes(k as never), k);
  for (const k of [
    'header-length',
    'header-json',
    'duplicate-key',
    'metadata',
    'dtype',
    'shape',
    'byte-length',
    'offsets',
    'index',
    'unsafe-path',
    'pickle',
    'not-found',
  ]) {
    assert.ok(s.byKind[k] > 0, `no '${k}' rejection`);
  }
  for (const r of results.filter((x) => x.outcome === 'rejected')) {
    assert.ok(r.message!.startsWith(root), `names a case file: ${r.message}`);
    assert.ok(!r.message!.includes('\n'));
  }
  assert.ok(s.accepted >= 50, `valid inputs accepted: ${s.accepted}`);
});

test('a case is reproducible from (seed, index)', async () => {
  // The roots differ (wherever the temp directory is: test/run.mjs gives each run its own).
  const [ra, rb] = [tempDir(), tempDir()];
  const a = await runCase(123, { seed: 9, root: ra, timeoutMs: 5000 });
  const b = await runCase(123, { seed: 9, root: rb, timeoutMs: 5000 });
  assert.deepEqual(
    { ...a, ms: 0, message: a.message?.split(ra).join('ROOT') },
    { ...b, ms: 0, message: b.message?.split(rb).join('ROOT') },
  );
});

test('the harness reports a stuck consumer as a hang and an untyped error as a crash', async () => {
  const root = tempDir();
  const stuck = await runCases(0, 40, {
    seed: 1,
    root,
    timeoutMs: 200,
    consumers: [() => new Promise(() => undefined)],
  });
  assert.equal(stuck.accepted, 0);
  assert.ok(stuck.hangs > 0);
  const crashing = await runCases(0, 40, {
    seed: 1,
    root,
    timeoutMs: 1000,
    consumers: [
      async () => {
        throw new TypeError('boom');
      },
    ],
  });
  assert.equal(crashing.accepted, 0);
  assert.equal(crashing.crashes, stuck.hangs);
  assert.match(crashing.failures[0].message!, /untyped TypeError: boom/);
});

test('npm run fuzz (dist/fuzz.js) runs cases in a watched worker and exits 0; bad options exit 2', () => {
  const cli = path.join(repoRoot, 'dist', 'fuzz.js');
  const r = spawnSync(process.execPath, [cli, '--cases', '60', '--seed', '5', '--json'], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  assert.equal(s.cases, 60);
  assert.equal(s.crashes + s.hangs + s.missed + s.unhandledRejections, 0);
  const bad = spawnSync(process.execPath, [cli, '--cases', 'x'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--cases needs a non-negative integer/);
});
