// Runs every compiled test file (unit, protocol, e2e tiers) in one node:test run so that
// the closing "# pass / # fail" lines cover the whole suite.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync, existsSync } from 'node:fs';
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
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...selected], { stdio: 'inherit' });
process.exit(r.status ?? 1);
