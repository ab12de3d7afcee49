// The worker bundles (dist/eval-worker.js, dist/calib-worker.js, dist/tokenize-worker.js,
// dist/planner-worker.js) are found beside the bundle that starts them (dist/server.js,
// dist/cli.js) or, from the compiled tests in out/, in the repo's dist/ a few folders up.

import * as fs from 'node:fs';
import * as path from 'node:path';

export function bundleScript(file: string): string {
  let d = __dirname;
  for (let i = 0; i < 6; i++) {
    for (const c of [path.join(d, file), path.join(d, 'dist', file)]) if (fs.existsSync(c)) return c;
    d = path.dirname(d);
  }
  throw new Error(`dist/${file} not found: run \`node esbuild.mjs\` first`);
}
