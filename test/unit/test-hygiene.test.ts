// Issue 27.15: a test run leaves nothing in the temp directory. test/run.mjs gives the run a
// temp directory of its own and fails a run whose tests leave entries there, naming them.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { repoRoot, tempDir } from '../helpers';

const RUNNER = path.join(repoRoot, 'test', 'run.mjs');

/** Runs test/run.mjs over one compiled test file whose body is `body`. */
function runnerOver(body: string) {
  const scratch = tempDir('loftq-runner-');
  fs.mkdirSync(path.join(scratch, 'out', 'test'), { recursive: true });
  fs.writeFileSync(
    path.join(scratch, 'out', 'test', 'scratch.test.js'),
    "const { test } = require('node:test');\n" +
      "const fs = require('node:fs'), os = require('node:os'), path = require('node:path');\n" +
      `test('scratch', () => {\n${body}\n});\n`,
  );
  // Outside this test's node:test context, or the inner run would refuse to run files.
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  const r = spawnSync(process.execPath, [RUNNER], { cwd: scratch, encoding: 'utf8', env });
  fs.rmSync(scratch, { recursive: true, force: true });
  return r;
}

test('test/run.mjs fails a run that leaves entries in the temp directory, and removes them', () => {
  const before = new Set(fs.readdirSync(os.tmpdir()));
  const leaky = runnerOver(
    `const d = fs.mkdtempSync(path.join(os.tmpdir(), 'leaky-')); fs.writeFileSync(path.join(d, 'x'), 'x');\n` +
      `fs.mkdirSync(path.join(d, 'ro')); fs.chmodSync(path.join(d, 'ro'), 0o500);`,
  );
  assert.equal(leaky.status, 1, leaky.stdout + leaky.stderr);
  assert.match(leaky.stderr, /the tests left 1 entries in the temp directory: leaky-/);
  const clean = runnerOver(
    `const d = fs.mkdtempSync(path.join(os.tmpdir(), 'tidy-')); fs.rmSync(d, { recursive: true });`,
  );
  assert.equal(clean.status, 0, clean.stdout + clean.stderr);
  const failing = runnerOver(`throw new Error('a failing test');`);
  assert.notEqual(failing.status, 0, 'a failing test still fails the run');
  // Neither run left its temp directory (or what the tests put there) behind.
  const after = fs.readdirSync(os.tmpdir()).filter((e) => !before.has(e) && !e.startsWith('loftq-runner-'));
  assert.deepEqual(after, []);
});
