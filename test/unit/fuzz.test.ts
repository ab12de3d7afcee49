// The fuzz harness in CI: ≥ 1,000 seeded hostile checkpoints through the inspect path
// with zero crashes, hangs, missed rejections or unhandled rejections, every rejection a
// typed one-line error naming a file of the case; and a few hundred hostile model inputs (token
// files, imatrix files, tokenizer.json, config.json numbers) through calibrated quantize and eval,
// each accepted with finite results or refused naming the right file. Also checks that the
// harness itself notices hangs and untyped errors, and that cases are reproducible.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { CaseResult, MUTATORS, runCase, runCases, type Summary } from '../../server/src/tools/fuzz/runner';
import { FAMILIES, type Family } from '../../server/src/tools/fuzz/families';
import { CANCEL_GRACE_MS, INPUT_MUTATORS, runInputCase } from '../../server/src/tools/fuzz/input-runner';
import { InputError } from '../../server/src/base/errors';
import type { InputFamily } from '../../server/src/tools/fuzz/inputs';
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

/** The family of a mutator, by name. */
function familyOfMutator(name: string): Family {
  return INPUT_MUTATORS.find((m) => m.name === name)?.family ?? 'checkpoint';
}

// Model inputs: each family's cases through calibrated quantize and eval on tiny models of every
// architecture, in dist/fuzz.js's watched worker (a case stuck in synchronous code, as a tokenizer id
// of 2^31 - 1 once held it, is a hang there, not a stuck test; a heap bound of its own). The bound of
// a case: cancelled at 3 s, a hang at 6 s. Sizes keep the four under a minute here: a token or
// tokenizer case runs the forward pass four times, an imatrix case none.
const INPUT_RUNS: [InputFamily, number][] = [
  ['imatrix', 150],
  ['calib', 60],
  ['config', 60],
  ['tokenizer', 30],
];
const FUZZ_CLI = path.join(repoRoot, 'dist', 'fuzz.js');
for (const [family, cases] of INPUT_RUNS) {
  const title = `${cases} hostile ${family} inputs through calibrated quantize and eval`;
  test(`${title}: finite results, or a refusal naming the file`, () => {
    const args = ['--cases', String(cases), '--seed', '27', '--family', family, '--input-timeout-ms', '6000', '--json'];
    const r = spawnSync(process.execPath, [FUZZ_CLI, ...args], { encoding: 'utf8', timeout: 150_000 });
    assert.equal(
      r.status,
      0,
      r.stderr
        .split('\n')
        .filter((l) => l.startsWith('case '))
        .join('\n') || r.stderr,
    );
    const s = JSON.parse(r.stdout) as Summary;
    assert.deepEqual(s.failures, []);
    assert.equal(s.cases, cases);
    assert.equal(s.crashes + s.hangs + s.missed + s.unhandledRejections, 0);
    // Every case was the family's, and both ends were reached: inputs run to finite results, and refusals.
    const ran = Object.keys(s.byMutator);
    for (const m of ran) assert.equal(familyOfMutator(m), family, m);
    assert.ok(s.accepted > 0 && s.rejected > 0, `accepted ${s.accepted}, rejected ${s.rejected}`);
    const all = INPUT_MUTATORS.filter((m) => m.family === family);
    assert.ok(ran.length >= all.length * 0.7, `${ran.length} of ${all.length} mutators ran`);
    // What the consumers checked on accepted inputs: calibrated files, and eval where the family has tokens.
    const notes = Object.keys(s.byNote).join('\n');
    assert.match(notes, /^quantize: (tokens|text|imatrix), calibrated, files finite$/m);
    if (family !== 'imatrix') assert.match(notes, /^eval: report updated, finite$/m);
    // Refusals name the file the family mutates (or, for config.json numbers, the checkpoint they disagree with).
    const named: Record<InputFamily, RegExp> = {
      calib: /\((calib\.json)\)$/,
      imatrix: /\((imatrix\.(gguf|dat))\)$/,
      tokenizer: /\((tokenizer\.json|tokenizer_config\.json|calib\.txt)\)$/,
      config: /\((config\.json|model\.safetensors)\)$/,
    };
    for (const k of Object.keys(s.byKind)) if (k !== 'cancelled at the bound') assert.match(k, named[family]);
  });
}

test('the model-input harness: an ignored cancel is a hang, an untyped error or a wrong blame a crash', async () => {
  const root = tempDir();
  type Stages = Parameters<typeof runInputCase>[2]['consumer'];
  const accepted = (stage: string) => ({ stage, kind: 'accepted' as const, notes: [] });
  const stub = (quantize: Stages['quantize']): Stages => ({ quantize, eval: async () => accepted('eval') });
  const run = async (consumer: Stages, cases: number, timeoutMs = 600) => {
    const out: CaseResult[] = [];
    for (let i = 0; i < cases; i++) out.push(await runInputCase(i, 'calib', { seed: 3, root, timeoutMs, consumer }));
    return out;
  };
  const outcomes = (rs: CaseResult[]) => [...new Set(rs.map((r) => r.outcome))];
  // A stage that never ends, and one that hears the cancel but takes 1.6 s (more than the grace) to stop.
  assert.deepEqual(
    outcomes(
      await run(
        stub(() => new Promise(() => undefined)),
        4,
      ),
    ),
    ['hang'],
  );
  const late = await run(
    stub(
      (_m, _c, _o, signal) =>
        new Promise((resolve) =>
          signal.addEventListener('abort', () =>
            setTimeout(() => resolve({ stage: 'quantize', kind: 'cancelled' }), CANCEL_GRACE_MS + 100),
          ),
        ),
    ),
    1,
    4 * CANCEL_GRACE_MS,
  );
  assert.equal(late[0].outcome, 'hang');
  assert.match(late[0].message!, /quantize took \d+ ms to stop after a cancel/);
  // An untyped error; a typed one naming a file valid in the case, or no file of it.
  const thrown = await run(
    stub(async () => {
      throw new TypeError('boom');
    }),
    3,
  );
  assert.deepEqual(outcomes(thrown), ['crash']);
  assert.match(thrown[0].message!, /untyped TypeError: boom/);
  const blamed = await run(
    stub(async (model) => ({
      stage: 'quantize',
      kind: 'rejected',
      error: new InputError(path.join(model, 'config.json'), 'is wrong'),
    })),
    3,
  );
  assert.deepEqual(outcomes(blamed), ['crash']);
  assert.match(blamed[0].message!, /quantize blames config\.json, valid in this case/);
  const elsewhere = await run(
    stub(async () => ({ stage: 'quantize', kind: 'rejected', error: new InputError('/elsewhere/x.json', 'is wrong') })),
    3,
  );
  assert.match(elsewhere[0].message!, /names no file of the case/);
  // Everything accepted: exactly the cases of mutators whose inputs are invalid by construction are missed.
  const all = await run(
    stub(async () => accepted('quantize')),
    40,
  );
  const invalid = (r: CaseResult) => INPUT_MUTATORS.find((m) => m.name === r.mutator)!.expect === 'invalid';
  assert.deepEqual(
    all.map((r) => r.outcome),
    all.map((r) => (invalid(r) ? 'missed' : 'accepted')),
  );
  assert.ok(all.some(invalid) && !all.every(invalid));
});

test('npm run fuzz (dist/fuzz.js) runs every family in a watched worker and exits 0; bad options exit 2', () => {
  const cli = FUZZ_CLI;
  const r = spawnSync(process.execPath, [cli, '--cases', '30', '--seed', '5', '--json'], {
    encoding: 'utf8',
    timeout: 90_000,
  });
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  assert.equal(s.cases, 30);
  assert.equal(s.crashes + s.hangs + s.missed + s.unhandledRejections, 0);
  // The default run covers every family (case i is family i mod 5).
  assert.deepEqual([...new Set(Object.keys(s.byMutator).map(familyOfMutator))].sort(), [...FAMILIES].sort());
  const one = spawnSync(process.execPath, [cli, '--cases', '40', '--seed', '5', '--family', 'checkpoint', '--json'], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(one.status, 0, one.stderr);
  assert.deepEqual([...new Set(Object.keys(JSON.parse(one.stdout).byMutator).map(familyOfMutator))], ['checkpoint']);
  const bad = spawnSync(process.execPath, [cli, '--cases', 'x'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--cases needs a non-negative integer/);
  const family = spawnSync(process.execPath, [cli, '--family', 'calib,nope'], { encoding: 'utf8' });
  assert.equal(family.status, 2);
  assert.match(family.stderr, /--family takes checkpoint, calib, imatrix, tokenizer, config .*not 'nope'/);
});
