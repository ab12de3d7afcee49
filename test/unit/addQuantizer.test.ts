// Issue 12's measure of the registry: adding a quantizer takes four hand-edited files — the
// registry entry, its codebook builder, a test and the docs. This test makes that change to
// a scratch copy of the repository (its files as they are here, node_modules linked), runs
// `registry-sync` (which regenerates the enums in package.json and the plan schema), builds,
// type-checks, runs the new quantizer through the CLI and a plan file, and lists what changed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot, tempDir } from '../helpers';

const HAND_EDITED = [
  'server/src/registry/quantizers.ts',
  'server/src/quant/codebook.ts',
  'test/unit/sqrtq.test.ts',
  'README.md',
];
const GENERATED = ['package.json', 'schemas/loftq.schema.json'];

function edit(root: string, file: string, anchor: string, insert: string) {
  const p = path.join(root, file);
  const text = fs.readFileSync(p, 'utf8');
  assert.ok(text.includes(anchor), `${file} still has '${anchor}'`);
  fs.writeFileSync(p, text.replace(anchor, anchor + insert));
}

const NEW_TEST = `import { test } from 'node:test';
import assert from 'node:assert/strict';
import { codebook } from '../../server/src/quant/codebook';

test('sqrtq: square-root levels', () => {
  assert.deepEqual([...codebook('sqrtq', 2)].map((v) => +v.toFixed(4)), [-1, -0.5774, 0.5774, 1]);
});
`;

test('a new quantizer is a 4-file change that builds, type-checks and runs', { timeout: 900_000 }, () => {
  const scratch = tempDir('loftq-add-quantizer-');
  const sh = (cmd: string, args: string[]) =>
    execFileSync(cmd, args, { cwd: scratch, encoding: 'utf8', stdio: 'pipe' });
  try {
    const ls = ['ls-files', '-co', '--exclude-standard', '-z'];
    const listed = execFileSync('git', ls, { cwd: repoRoot, encoding: 'utf8' });
    // Regular files only: an untracked link (a cache linked into a worktree) is not the project's.
    const isFile = (f: string) => fs.lstatSync(path.join(repoRoot, f), { throwIfNoEntry: false })?.isFile();
    const files = listed.split('\0').filter((f) => f && isFile(f));
    for (const f of files) {
      fs.mkdirSync(path.dirname(path.join(scratch, f)), { recursive: true });
      fs.copyFileSync(path.join(repoRoot, f), path.join(scratch, f));
    }
    fs.symlinkSync(path.join(repoRoot, 'node_modules'), path.join(scratch, 'node_modules'));
    sh('git', ['init', '-q']);
    sh('git', ['add', '-A']);
    sh('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.invalid', 'commit', '-qm', 'base']);

    // The four edits.
    edit(
      scratch,
      HAND_EDITED[0],
      "scale: 'meanStd', detail: 'Uniform table on [-1, 1], block scale mean + 2.5σ' },",
      "\n  sqrtq: { bits: [2, 4], scale: 'absmax', detail: 'square-root levels (test)' },",
    );
    edit(
      scratch,
      HAND_EDITED[1],
      'uniform: uniformTable,',
      '\n  sqrtq: (bits) => uniformTable(bits).map((v) => Math.sign(v) * Math.sqrt(Math.abs(v))),',
    );
    fs.writeFileSync(path.join(scratch, HAND_EDITED[2]), NEW_TEST);
    edit(scratch, HAND_EDITED[3], '[--quantizer nf|uniform', '|sqrtq');

    sh(process.execPath, ['esbuild.mjs', '--tests']);
    sh(process.execPath, ['dist/registry-sync.js']);
    sh(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json', '--noEmit']);
    sh(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'webviews/tsconfig.json', '--noEmit']);
    const tests = spawnSync(process.execPath, ['test/run.mjs', 'sqrtq', 'registrySync'], {
      cwd: scratch,
      encoding: 'utf8',
    });
    assert.equal(tests.status, 0, tests.stdout + tests.stderr);

    const cli = (...args: string[]) =>
      spawnSync(process.execPath, ['dist/cli.js', ...args], { cwd: scratch, encoding: 'utf8' });
    const run = [
      '--rank',
      '2',
      '--iters',
      '1',
      '--target',
      '**.layers.0.**.q_proj',
      '--backend',
      'cpu',
      '--quiet',
      '--json',
    ];
    const r = cli(
      'quantize',
      'examples/stories260k',
      '--out',
      'out-cli',
      '--quantizer',
      'sqrtq',
      '--bits',
      '2',
      ...run,
    );
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(
      JSON.parse(r.stdout).matrices.map((m: { quantizer: string }) => m.quantizer),
      ['sqrtq'],
    );
    // A width the quantizer lacks is one line, exit 2, before any work.
    const bad = cli(
      'quantize',
      'examples/stories260k',
      '--out',
      'out-bad',
      '--quantizer',
      'sqrtq',
      '--bits',
      '3',
      ...run,
    );
    assert.equal(bad.status, 2, bad.stderr);
    assert.match(bad.stderr.trim(), /^loftq: bits must be 2 or 4 with quantizer sqrtq, got 3$/);
    assert.equal(fs.existsSync(path.join(scratch, 'out-bad')), false);
    fs.writeFileSync(
      path.join(scratch, 'loftq.json'),
      JSON.stringify({ checkpoint: 'examples/stories260k', defaults: { quantizer: 'sqrtq', bits: 4 } }),
    );
    const planned = cli('quantize', '--plan', 'loftq.json', '--out', 'out-plan', ...run);
    assert.equal(planned.status, 0, planned.stderr);
    assert.equal(JSON.parse(planned.stdout).matrices[0].bits, 4);
    const schema = JSON.parse(fs.readFileSync(path.join(scratch, GENERATED[1]), 'utf8'));
    assert.deepEqual(schema.definitions.settings.properties.quantizer.enum, ['nf', 'uniform', 'sqrtq', 'hqq']);

    const changed = sh('git', ['status', '--porcelain', '--untracked-files=all'])
      .split('\n')
      .filter(Boolean)
      .map((l) => l.slice(3))
      .filter((f) => !/^(out-|loftq\.json$)/.test(f))
      .sort();
    console.log(`# files changed: hand-edited ${HAND_EDITED.join(', ')}; regenerated ${GENERATED.join(', ')}`);
    assert.deepEqual(changed, [...HAND_EDITED, ...GENERATED].sort());
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
});
