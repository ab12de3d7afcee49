// Runs every compiled test file (unit, protocol, e2e tiers) in one node:test run so that
// the closing "# pass / # fail" lines cover the whole suite.
//
// The run gets a temp directory of its own (TMPDIR, which os.tmpdir() and the processes the tests
// start read): every test removes what it makes there, also on failure (test/helpers.ts tempDir),
// and a run that leaves anything behind fails, naming it (issue 27.15). The directory itself is
// removed either way, so nothing reaches the system temp directory.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const files = [];
const walk = (d) => {
  if (!existsSync(d)) return;
  for (const f of readdirSync(d).sort()) {
    const p = join(d, f);
    if (statSync(p).isDirectory()) walk(p);
    else if (p.endsWith('.test.js')) files.push(p);
  }
};
const only = process.argv.slice(2);
walk('out/test');
const selected = only.length ? files.filter((f) => only.some((o) => f.includes(o))) : files;
const tmp = mkdtempSync(join(tmpdir(), 'loftq-run-'));
// As /tmp is: tests run children as another user (nobody), which must reach their folders.
chmodSync(tmp, 0o1777);
const env = { ...process.env, TMPDIR: tmp, TMP: tmp, TEMP: tmp };
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...selected], { stdio: 'inherit', env });
let left = [];
try {
  left = readdirSync(tmp);
} finally {
  // Read-only folders a test left need write permission back before their entries can go.
  if (left.length) spawnSync('chmod', ['-R', 'u+w', tmp]);
  rmSync(tmp, { recursive: true, force: true });
}
if (left.length) {
  const shown = left.slice(0, 20).join(', ') + (left.length > 20 ? `, … (${left.length} in all)` : '');
  process.stderr.write(`test/run.mjs: the tests left ${left.length} entries in the temp directory: ${shown}\n`);
  process.exit(1);
}
process.exit(r.status ?? 1);
