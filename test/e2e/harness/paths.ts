// Where the end-to-end tier finds its real VS Code (code-server, installed by
// test/e2e/setup.sh into .e2e-cache/) and the browser that drives it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from '../../helpers';

export const cacheDir = path.join(repoRoot, '.e2e-cache');
export const codeServerBin = path.join(cacheDir, 'code-server', 'node_modules', '.bin', 'code-server');
export const chromiumBin =
  ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p)) ?? '/usr/bin/chromium';
export const screenshotDir = path.join(repoRoot, 'test', 'e2e', 'screenshots');

/** Why the tier cannot run here, or undefined when it can. */
export function missingSetup(): string | undefined {
  const missing = [codeServerBin, chromiumBin].filter((p) => !fs.existsSync(p));
  return missing.length
    ? `end-to-end tier skipped: ${missing.join(', ')} not found — ` +
        'run test/e2e/setup.sh to install code-server and chromium'
    : undefined;
}
