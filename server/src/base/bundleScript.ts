// Files built into dist/ (the worker bundles dist/eval-worker.js, dist/calib-worker.js,
// dist/planner-worker.js; the native module dist/loftq_native.node) are found beside the
// bundle that loads them (dist/server.js, dist/cli.js) or, from the compiled tests in out/, in
// the repo's dist/ a few folders up.

import * as fs from 'node:fs';
import * as path from 'node:path';

/** dist/`file` beside this bundle or a few folders up, or undefined. */
export function findBuilt(file: string): string | undefined {
  let d = __dirname;
  for (let i = 0; i < 6; i++) {
    for (const c of [path.join(d, file), path.join(d, 'dist', file)]) if (fs.existsSync(c)) return c;
    d = path.dirname(d);
  }
  return undefined;
}

export function bundleScript(file: string): string {
  const found = findBuilt(file);
  if (!found) throw new Error(`dist/${file} not found: run \`node esbuild.mjs\` first`);
  return found;
}
