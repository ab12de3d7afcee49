// Packages the real .vsix the way a release does (production bundle + vsce), in a staging
// folder so the working tree's dist/ is left as the test build made it. Relative README
// links stay relative: package.json names no repository to rewrite them against.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from '../../helpers';

// Sources and node_modules are linked (only the bundler reads them); what goes into the
// package is copied, since vsce does not follow linked folders.
const LINKED = ['client', 'server', 'webviews', 'node_modules'];
const COPIED = ['package.json', 'esbuild.mjs', 'examples', 'schemas', 'README.md', 'SECURITY.md', 'LICENSE', '.vscodeignore'];

export function packageVsix(stage: string): string {
  fs.mkdirSync(stage, { recursive: true });
  for (const f of LINKED) if (fs.existsSync(path.join(repoRoot, f))) fs.symlinkSync(path.join(repoRoot, f), path.join(stage, f));
  for (const f of COPIED) if (fs.existsSync(path.join(repoRoot, f))) fs.cpSync(path.join(repoRoot, f), path.join(stage, f), { recursive: true });
  const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { cwd: stage, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, npm_config_update_notifier: 'false' } });
  run(process.execPath, ['esbuild.mjs', '--production']);
  const out = path.join(stage, 'loftq-lens.vsix');
  const vsce = path.join(repoRoot, 'node_modules', '@vscode', 'vsce', 'vsce');
  run(process.execPath, [vsce, 'package', '--allow-missing-repository', '--skip-license', '--allow-unused-files-pattern', '--no-rewrite-relative-links', '-o', out]);
  return out;
}
