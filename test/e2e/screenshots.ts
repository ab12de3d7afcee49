// Makes the README's screenshots (docs/images/*.png) with the end-to-end harness: the real
// .vsix in a real VS Code (code-server + headless Chromium), on a real calibrated LoftQ run
// of the bundled stories260K model. Run: `npm run screenshots` (needs test/e2e/setup.sh).
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Frame, Page } from 'playwright-core';
import { repoRoot, tempDir } from '../helpers';
import { startCodeServer } from './harness/codeServer';
import { missingSetup } from './harness/paths';
import { packageVsix } from './harness/vsix';
import {
  contextMenu,
  openInWebview,
  openWorkbench,
  runCommand,
  screenshot,
  until,
  webviewFrame,
} from './harness/workbench';
import { makeWorkspace, SHARD_1 } from './harness/workspace';

const OUT = path.join(repoRoot, 'docs', 'images');

/** Preferences: Toggle between Light/Dark Themes (to the Modern themes, VS Code's defaults). */
async function toggleTheme(page: Page, toDark: boolean): Promise<void> {
  // Keys typed while a webview has focus stay in the webview: focus the workbench first.
  await page.locator('.tabs-container .tab.active').click();
  await runCommand(page, 'Preferences: Toggle between Light/Dark Themes');
  await until(
    'the theme to switch',
    async () => (await page.locator(toDark ? '.monaco-workbench.vs-dark' : '.monaco-workbench.vs').count()) > 0,
    30_000,
  );
  await page.waitForTimeout(800);
}

/** Only the editor area: the webview and its tab. `keepPointer`: leave the hovered cell hovered. */
async function shoot(page: Page, name: string, keepPointer = false): Promise<void> {
  if (!keepPointer) await page.mouse.move(0, 0);
  const box = await page.locator('.part.editor').boundingBox();
  const file = path.join(OUT, `${name}.png`);
  await page.screenshot({ path: file, clip: box ?? undefined });
  console.log(`wrote ${path.relative(repoRoot, file)}`);
}

async function hoverCell(frame: Frame, name: string): Promise<void> {
  await frame.hover(`.grid .cell[data-name="${name}"]`);
  await frame.locator('.details .spark').waitFor();
}

async function main(): Promise<void> {
  const skip = missingSetup();
  if (skip) throw new Error(skip);
  fs.mkdirSync(OUT, { recursive: true });
  const root = tempDir('loftq-shots-');
  const ws = path.join(root, 'workspace');
  makeWorkspace(ws);
  // A calibrated NF4 rank-16 run and its model-level evaluation, with the CLI as a user runs them.
  const outName = 'model-loftq-nf4-r16-calibrated';
  const model = path.join(ws, 'stories260k');
  const cli = (...args: string[]) =>
    execFileSync(process.execPath, [path.join(repoRoot, 'dist', 'cli.js'), ...args], { stdio: 'inherit' });
  const out = path.join(model, outName);
  cli('quantize', model, '--out', out, '--bits', '4', '--rank', '16', '--iters', '5', '--calib-generate', '16,128');
  // Held-out tokens as the editor's "Evaluate Model Outputs" samples them (the seed after the calibration's).
  cli('eval', model, out, '--generate', '16,128');
  const server = await startCodeServer({
    root: path.join(root, 'vscode'),
    workspace: ws,
    vsix: packageVsix(path.join(root, 'stage')),
    settings: {
      'workbench.colorTheme': 'Default Dark Modern',
      'workbench.preferredLightColorTheme': 'Default Light Modern',
      'workbench.activityBar.location': 'hidden',
      'breadcrumbs.enabled': false,
    },
  });
  const wb = await openWorkbench(server.url, ws);
  const page = wb.page;
  await page.setViewportSize({ width: 1500, height: 860 });
  try {
    const probe = 'model.layers.3.self_attn.q_proj.weight';
    await contextMenu(page, `stories260k/${outName}/loftq-report.json`, 'Open Error Heatmap');
    let frame = await webviewFrame(page, '.grid .cell[data-name]', 60_000);
    await runCommand(page, 'View: Close Primary Side Bar');
    await frame.click('button[data-space="output"]');
    await hoverCell(frame, probe);
    await shoot(page, 'heatmap-dark', true);

    await toggleTheme(page, false);
    frame = await webviewFrame(page, '.grid .cell[data-name]', 30_000);
    await hoverCell(frame, probe);
    await shoot(page, 'heatmap-light', true);

    // The viewer on the quantized checkpoint: error columns from the report, the module tree.
    await page.locator('.tabs-container .tab.active').click(); // keys to the workbench, not the webview
    frame = await openInWebview(page, `stories260k/${outName}/model.safetensors`, 'p.summary:has-text("LoftQ errors")');
    await runCommand(page, 'View: Close Primary Side Bar');
    // Layer 1 opened in the tree and chosen: the table shows its seven matrices.
    await frame.$eval('li[data-path="model.layers.1"] > details', (d) => d.setAttribute('open', ''));
    await frame.click('li[data-path="model.layers.1"] > details > summary button.node');
    await page.waitForTimeout(500);
    await shoot(page, 'viewer');

    await page.locator('.tabs-container .tab.active').click(); // keys to the workbench, not the webview
    frame = await openInWebview(page, `sharded/${SHARD_1}`, '.shard-note');
    await runCommand(page, 'View: Close Primary Side Bar');
    await page.waitForTimeout(500);
    await shoot(page, 'viewer-shard');
  } catch (e) {
    console.error(`failed; the workbench as it was: ${await screenshot(page, 'failed-docs-screenshots')}`);
    throw e;
  } finally {
    await wb.browser.close();
    await server.stop();
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
