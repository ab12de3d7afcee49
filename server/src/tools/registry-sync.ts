// `npm run sync-registry [-- --check]`: rewrites the registry facts in package.json and
// schemas/loftq.schema.json (registry-sync-lib.ts); --check only lists the files that differ.
import * as fs from 'node:fs';
import { syncedTexts } from './registry-sync-lib';

const FILES = { pkg: 'package.json', schema: 'schemas/loftq.schema.json' } as const;
const check = process.argv.includes('--check');
const now = { pkg: fs.readFileSync(FILES.pkg, 'utf8'), schema: fs.readFileSync(FILES.schema, 'utf8') };
const want = syncedTexts(now.pkg, now.schema);
const stale = (Object.keys(FILES) as (keyof typeof FILES)[]).filter((k) => want[k] !== now[k]);
for (const k of stale) {
  if (check) process.stderr.write(`${FILES[k]} is out of date with server/src/registry (npm run sync-registry)\n`);
  else fs.writeFileSync(FILES[k], want[k]);
}
if (!check) process.stdout.write(stale.length ? `rewrote ${stale.map((k) => FILES[k]).join(', ')}\n` : 'up to date\n');
process.exit(check && stale.length ? 1 : 0);
