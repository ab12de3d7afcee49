// The same end-to-end checks through @vscode/test-electron, for machines that can download
// VS Code (CI here cannot; it runs test/e2e/vscode.test.ts on code-server instead).
//   node esbuild.mjs && npx esbuild test/e2e/electron/runTest.ts --bundle --platform=node \
//     --packages=external --outfile=out/e2e-electron/runTest.js && node out/e2e-electron/runTest.js
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { build } from 'esbuild';
import { runTests } from '@vscode/test-electron';
import { makeWorkspace } from '../harness/workspace';

async function main(): Promise<void> {
  const root = path.resolve(__dirname, '..', '..');
  const suite = path.join(root, 'out', 'e2e-electron', 'suite.js');
  await build({
    entryPoints: [path.join(root, 'test', 'e2e', 'electron', 'suite.ts')],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    external: ['vscode'],
    outfile: suite,
    logLevel: 'warning',
  });
  const ws = fs.mkdtempSync(path.join(os.tmpdir(), 'loftq-electron-'));
  makeWorkspace(ws);
  try {
    await runTests({
      version: process.env.VSCODE_VERSION ?? 'stable',
      extensionDevelopmentPath: root,
      extensionTestsPath: suite,
      launchArgs: [ws, '--disable-extensions', '--disable-workspace-trust', '--skip-welcome', '--skip-release-notes'],
    });
  } finally {
    fs.rmSync(ws, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
