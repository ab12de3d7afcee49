// Packages the real .vsix with the release command (`npm run package`: production bundle +
// vsce), in a staging folder so the working tree's dist/ is left as the test build made it.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from '../../helpers';

// Sources and node_modules are linked (only the bundler reads them); what goes into the
// package is copied, since vsce does not follow linked folders.
const LINKED = ['client', 'server', 'webviews', 'node_modules'];
const COPIED = [
  'package.json',
  'esbuild.mjs',
  'examples',
  'schemas',
  'README.md',
  'SECURITY.md',
  'LICENSE',
  '.vscodeignore',
  'docs/images',
];

export function packageVsix(stage: string): string {
  fs.mkdirSync(stage, { recursive: true });
  for (const f of LINKED)
    if (fs.existsSync(path.join(repoRoot, f))) fs.symlinkSync(path.join(repoRoot, f), path.join(stage, f));
  for (const f of COPIED)
    if (fs.existsSync(path.join(repoRoot, f)))
      fs.cpSync(path.join(repoRoot, f), path.join(stage, f), { recursive: true });
  const out = path.join(stage, 'loftq-lens.vsix');
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const env = { ...process.env, npm_config_update_notifier: 'false', npm_config_fund: 'false' };
  execFileSync(npm, ['run', '--silent', 'package', '--', '-o', out], {
    cwd: stage,
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  return out;
}
