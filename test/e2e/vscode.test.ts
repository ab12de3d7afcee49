// End-to-end in a real VS Code (code-server + headless Chromium, offline): package the real
// .vsix, install it, and use the extension as a user would. Skips with a pointer to
// test/e2e/setup.sh when code-server or chromium is not installed.
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Frame, Page } from 'playwright-core';
import type { Report } from '../../server/src/protocol/lsp_ext';
import { repoRoot, tempDir } from '../helpers';
import { CodeServer, startCodeServer } from './harness/codeServer';
import { missingSetup } from './harness/paths';
import { packageVsix } from './harness/vsix';
import {
  answerQuickInput,
  contextMenu,
  explorerRow,
  openInWebview,
  notification,
  openWorkbench,
  runCommand,
  screenshot,
  until,
  webviewFrame,
  Workbench,
} from './harness/workbench';
import {
  BROKEN_FILE,
  CALIB_MODEL,
  makeWorkspace,
  SHARD_1,
  SHARDED_LAYERS,
  SLOW_MATRICES,
  writeCalibratedRun,
  XSS_META,
  XSS_NAME,
} from './harness/workspace';
import { viridis } from '../../webviews/src/colormap';

const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const assertClose = (a: number, b: number) =>
  assert.ok(Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(b)), `${a} ≠ ${b}`);
/** The heatmap header's facts as { label: text }. */
const headerFacts = async (frame: Frame): Promise<Record<string, string>> =>
  Object.fromEntries(
    await frame.$$eval('.facts dt', (dts) =>
      dts.map((dt) => [dt.textContent ?? '', dt.nextElementSibling?.textContent ?? '']),
    ),
  );
/** A plan file VS Code has finished writing (a read during its save once saw an empty file). */
const written = (planText: string) => planText.trimEnd().endsWith('}');
const legendEnds = (frame: Frame) => frame.$$eval('.legend .lo, .legend .hi', (els) => els.map((e) => e.textContent));

const skip = missingSetup();
const noEngine = ['engine/run.ts', 'lsp/main.ts'].every((f) => fs.existsSync(path.join(repoRoot, 'server', 'src', f)))
  ? undefined
  : 'the engine run and the language server (server/src/engine/run.ts, server/src/lsp/main.ts) ' +
    'are not on this branch yet';

describe('VS Code end to end', { skip, timeout: 600_000 }, () => {
  let root: string;
  let ws: string;
  let server: CodeServer | undefined;
  let wb: Workbench | undefined;
  let page: Page;

  before(async () => {
    root = tempDir('loftq-e2e-');
    ws = path.join(root, 'workspace');
    makeWorkspace(ws);
    const vsix = packageVsix(path.join(root, 'stage'));
    server = await startCodeServer({ root: path.join(root, 'vscode'), workspace: ws, vsix });
    wb = await openWorkbench(server.url, ws);
    page = wb.page;
  });

  /** Right-click → Quantize with LoftQ, answering the questions (defaults for the rest). */
  const quantizeFromExplorer = async (
    relPath: string,
    a: { bits: string; rank: string; iters: string; calibration?: string },
  ) => {
    await contextMenu(page, relPath, 'Quantize with LoftQ');
    // The quantizer first (it decides the widths and formats offered), then bits, rank,
    // iterations, the output format, calibration (where the model has a config.json to run)
    // and the folder.
    const n = relPath.startsWith('slow/') ? 6 : 7;
    await answerQuickInput(page, new RegExp(`^Quantize \\S+ with LoftQ \\(1/${n}\\)$`));
    await answerQuickInput(page, new RegExp(`\\(2/${n}\\)`), a.bits);
    await answerQuickInput(page, new RegExp(`\\(3/${n}\\)`), a.rank);
    await answerQuickInput(page, new RegExp(`\\(4/${n}\\)`), a.iters);
    await answerQuickInput(page, new RegExp(`\\(5/${n}\\)`));
    if (n === 7) await answerQuickInput(page, /\(6\/7\)/, a.calibration ?? '');
    await answerQuickInput(page, new RegExp(`\\(${n}/${n}\\)`));
  };

  // A failing step leaves a screenshot of the workbench behind for diagnosis.
  const shot = (name: string, f: () => Promise<void>) => async () => {
    try {
      await f();
    } catch (e) {
      await screenshot(page, `failed-${name}`).catch(() => undefined);
      throw e;
    }
  };

  after(async () => {
    await wb?.browser.close();
    await server?.stop();
    if (root && !process.env.LOFTQ_E2E_KEEP) fs.rmSync(root, { recursive: true, force: true });
  });

  test(
    'opening a checkpoint shows the viewer; a tensor named with <script> renders as text',
    shot('viewer', async () => {
      const frame = await openInWebview(page, 'markup.safetensors', 'table.tensor-table tbody tr');
      const names = await frame.$$eval('table.tensor-table tbody td.name', (tds) => tds.map((t) => t.textContent));
      assert.deepEqual(
        [...names].sort(),
        [XSS_NAME, 'model.layers.0.self_attn.q_proj.weight', 'model.norm.weight'].sort(),
      );
      // Markup in names and metadata stayed text: no element was created from it.
      assert.equal(await frame.$$eval('#app script, #app img', (els) => els.length), 0);
      const metaText = await frame.$$eval('table.metadata td', (tds) => tds.map((t) => t.textContent));
      assert.ok(metaText.includes(XSS_META), `metadata shown as text: ${JSON.stringify(metaText)}`);
      assert.notEqual(await frame.title(), 'pwned');
      // Totals per dtype from the header: one F32 [4, 8], one F16 [8, 8], one BF16 [8].
      const dtypes = await frame.$$eval('table.dtypes tr', (trs) =>
        trs.slice(1).map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)),
      );
      assert.deepEqual(dtypes.sort(), [
        ['BF16', '1', '8', '16 B'],
        ['F16', '1', '64', '128 B'],
        ['F32', '1', '32', '128 B'],
      ]);
      // Sorting by parameters (descending on first click) puts the F16 matrix first.
      await frame.getByRole('button', { name: 'parameters' }).click();
      assert.equal(
        await frame.$eval('table.tensor-table tbody tr td.name', (td) => td.textContent),
        'model.layers.0.self_attn.q_proj.weight',
      );
      // Filtering keeps only the matching tensor.
      await frame.fill('#filter', 'script');
      await until('filter', async () => (await frame.$$('table.tensor-table tbody tr')).length === 1);
      assert.equal(await frame.$eval('table.tensor-table tbody td.name', (td) => td.textContent), XSS_NAME);
      await screenshot(page, 'viewer-markup');
      assert.deepEqual(wb!.dialogs, []);
    }),
  );

  test(
    'Quantize with LoftQ from the Explorer → heatmap with one cell per matrix',
    { skip: noEngine },
    shot('quantize', async () => {
      await quantizeFromExplorer('stories260k/model.safetensors', { bits: '2-bit', rank: '8', iters: '2' });
      const out = path.join(ws, 'stories260k', 'model-loftq-nf2-r8');
      const done = await notification(page, /LoftQ done: \d+ matrices/, 180_000);
      const report = JSON.parse(fs.readFileSync(path.join(out, 'loftq-report.json'), 'utf8')) as Report;
      assert.equal(report.settings.bits, 2);
      assert.equal(report.matrices[0].rank, 8);
      assert.equal(report.matrices[0].iters, 2);
      assert.equal(report.matrices.length, 35); // 5 layers × q k v o gate up down
      await done.getByRole('button', { name: 'Open Heatmap' }).click();
      const frame = await webviewFrame(page, '.grid .cell[data-name]', 60_000);
      await until(
        'all cells',
        async () => (await frame.$$('.grid .cell[data-name]')).length === report.matrices.length,
      );
      const cells = await frame.$$eval('.grid .cell[data-name]', (els) =>
        els.map((e) => ({
          name: e.getAttribute('data-name')!,
          value: Number(e.getAttribute('data-value')),
          text: e.textContent,
        })),
      );
      const byName = new Map(cells.map((c) => [c.name, c]));
      for (const m of report.matrices) {
        const c = byName.get(m.name);
        assert.ok(c, `cell for ${m.name}`);
        assert.equal(c.value, Math.fround(m.relError), m.name);
        assert.equal(c.text, m.relError.toFixed(4));
      }
      const cols = await frame.$$eval('.grid .colhead:not(.mean-head)', (els) => els.map((e) => e.textContent));
      assert.deepEqual(cols, ['q', 'k', 'v', 'o', 'gate', 'up', 'down']);
      const rows = await frame.$$eval('.grid .rowhead:not(.mean-head)', (els) => els.map((e) => e.textContent));
      assert.deepEqual(rows, ['0', '1', '2', '3', '4']);
      // Keyboard: the first cell is in the tab order; ArrowRight moves to the next module.
      const first = frame.locator('.grid .cell[tabindex="0"]');
      await first.focus();
      await page.keyboard.press('ArrowRight');
      assert.equal(
        await frame.evaluate('document.activeElement.dataset.name'),
        'model.layers.0.self_attn.k_proj.weight',
      );
      assert.match((await frame.locator('.details .name').textContent()) ?? '', /k_proj/);
      await screenshot(page, 'heatmap');
      await checkHeatmapExplainsItself(frame, report);
      // Clicking a cell reveals that module's entry in the plan; with no plan yet, offer to create one.
      await frame.locator('.grid .cell[data-name="model.layers.3.mlp.down_proj.weight"]').click();
      const ask = await notification(page, /No loftq\.json plans model\.safetensors/, 20_000);
      await ask.getByRole('button', { name: 'Create Plan' }).click();
      const planFile = path.join(ws, 'stories260k', 'loftq.json');
      await until('loftq.json written', async () => fs.existsSync(planFile));
      await page.locator('.tabs-container .tab.active', { hasText: 'loftq.json' }).waitFor();
      await until(
        'the new override to be selected',
        async () => (await page.locator('.monaco-editor .selected-text').count()) > 0,
      );
      // The new plan states the run's settings as defaults, the matrix's own bits and rank (never an empty override).
      const created = JSON.parse(fs.readFileSync(planFile, 'utf8'));
      assert.deepEqual(created, {
        checkpoint: './model.safetensors',
        defaults: { bits: 2, rank: 8, iters: 2, quantizer: 'nf' },
        overrides: [{ match: 'model.layers.3.mlp.down_proj', bits: 2, rank: 8 }],
      });
    }),
  );

  /** Header, means, hover, metric switch and fixed range of the NF2 rank-8 heatmap, against the report. */
  const checkHeatmapExplainsItself = async (frame: Frame, report: Report) => {
    assert.equal(await frame.$eval('header h1', (e) => e.textContent), 'model-loftq-nf2-r8');
    const facts = await headerFacts(frame);
    assert.equal(facts.settings, 'NF2 · rank 8 · 2 iterations · block 64');
    assert.equal(facts.backend, report.backend);
    assert.match(facts.checkpoint, /stories260k[\\/]model\.safetensors$/);
    assert.match(facts.time, /^\d+(\.\d)? s for 35 matrices · written /);
    const f32 = (xs: number[]) => xs.map(Math.fround);
    const loftqMean = avg(f32(report.matrices.map((m) => m.relError)));
    const qloraMean = avg(f32(report.matrices.map((m) => m.qloraRelError)));
    const means = facts['mean error per matrix'];
    assert.ok(means.startsWith(`LoftQ ${loftqMean.toFixed(4)} · QLoRA ${qloraMean.toFixed(4)}`), means);
    assert.equal(facts['mean output error'], undefined, 'no output error without calibration');
    assert.equal(await frame.$eval('.legend .direction', (e) => e.textContent), 'lower is better');
    assert.equal((await frame.$$('[data-space]')).length, 0, 'no weights/outputs switch without output errors');
    // Means: the first cell of the mean row is the q column's, the last cell of row 0 is layer 0's.
    const colMean = Number(await frame.$eval('.mean-row .cell.mean', (e) => e.getAttribute('data-mean')));
    assertClose(colMean, avg(f32(report.matrices.filter((m) => m.name.includes('.q_proj.')).map((m) => m.relError))));
    const rowMeans = await frame.$$eval('.grid .row .cell.mean', (els) =>
      els.map((e) => Number(e.getAttribute('data-mean'))),
    );
    const layer0 = report.matrices.filter((m) => m.name.startsWith('model.layers.0.'));
    assertClose(rowMeans[0], avg(f32(layer0.map((m) => m.relError))));
    // Hover: the cell is outlined and its row and column headers are highlighted.
    await frame.evaluate('document.activeElement.blur()');
    const up2 = '.grid .cell[data-name="model.layers.2.mlp.up_proj.weight"]';
    await frame.hover(up2);
    assert.ok(await frame.$eval(up2, (e) => e.classList.contains('current')));
    assert.deepEqual(await frame.$$eval('.rowhead.hl, .colhead.hl', (els) => els.map((e) => e.textContent)), [
      'up',
      '2',
    ]);
    // The sparkline has axes and marks one iteration.
    assert.equal(await frame.locator('.details .spark .spark-axis').count(), 2);
    assert.equal(await frame.locator('.details .spark .spark-best').count(), 1);
    // Improvement: QLoRA ÷ LoftQ per cell on a diverging palette; higher is better.
    await frame.click('button[data-metric="ratio"]');
    const ratios = await frame.$$eval('.grid .cell[data-name]', (els) =>
      els.map((e) => [e.getAttribute('data-name'), e.textContent]),
    );
    for (const [name, text] of ratios) {
      const m = report.matrices.find((x) => x.name === name)!;
      assert.equal(text, `${(Math.fround(m.qloraRelError) / Math.fround(m.relError)).toFixed(2)}×`, name!);
    }
    assert.match((await frame.$eval('.legend .direction', (e) => e.textContent)) ?? '', /higher is better/);
    // Fixed range: 1/4× to 4× for ratios, 0 to 0.5 for errors, whatever this report holds.
    await frame.click('button[data-scale="fixed"]');
    assert.deepEqual(await legendEnds(frame), ['0.25×', '4.00×']);
    await frame.click('button[data-metric="loftq"]');
    assert.deepEqual(await legendEnds(frame), ['0.0000', '0.5000']);
    const probe = report.matrices[0];
    const bg = await frame.$eval(
      `.grid .cell[data-name="${probe.name}"]`,
      (e) => (e as unknown as { style: { backgroundColor: string } }).style.backgroundColor,
    );
    assert.equal(bg, `rgb(${viridis(Math.fround(probe.relError) / 0.5)!.join(', ')})`);
    await frame.click('button[data-scale="data"]');
  };

  test(
    'Cancel on the progress notification stops a run half-way and leaves no files',
    { skip: noEngine },
    shot('cancel', async () => {
      // Toasts left by the test before (some with buttons, so they stay) must not crowd out
      // the progress notification.
      await runCommand(page, 'Notifications: Clear All Notifications');
      await quantizeFromExplorer('slow/model.safetensors', { bits: '2-bit', rank: '64', iters: '10' });
      const out = path.join(ws, 'slow', 'model-loftq-nf2-r64');
      // Half-way, read from the disk rather than from a toast's changing text: at least one
      // matrix finished (its journal entry, renamed into place, exists), not all of them.
      const journal = path.join(out, '.loftq-journal');
      const finished = () =>
        fs.existsSync(journal)
          ? fs.readdirSync(journal).filter((f) => f.endsWith('.safetensors') && !f.startsWith('.')).length
          : 0;
      await until('a first matrix to finish', async () => finished() >= 1, 180_000, 100);
      // The live heatmap opens with the first matrix the client hears of (after its journal entry):
      // under load that can come later, and a cancel before it leaves no heatmap to check.
      await page
        .locator('.tabs-container .tab', { hasText: 'model-loftq-nf2-r64' })
        .first()
        .waitFor({ timeout: 60_000 });
      assert.ok(finished() < SLOW_MATRICES, 'the run is still going');
      const progress = await notification(page, /LoftQ 2-bit: model\.safetensors/, 30_000);
      await progress.getByRole('button', { name: 'Cancel' }).click();
      await notification(page, /LoftQ run on model\.safetensors cancelled; no output was written/, 60_000);
      assert.ok(
        !fs.existsSync(out),
        `${out} left behind: ${fs.existsSync(out) ? fs.readdirSync(out, { recursive: true }).join(', ') : ''}`,
      );
      // The live heatmap says how the run ended.
      await until(
        'the heatmap to show the cancellation',
        async () => {
          for (const f of page.frames()) {
            const h1 = await f.$eval('header h1', (e) => e.textContent ?? '').catch(() => '');
            if (/model-loftq-nf2-r64 — cancelled after [1-9]\d* matrices; nothing was written/.test(h1)) return true;
          }
          return false;
        },
        20_000,
      );
      await screenshot(page, 'cancelled');
    }),
  );

  test(
    "the quantized checkpoint opens in the viewer with the report's error columns",
    { skip: noEngine },
    shot('viewer-errors', async () => {
      const out = 'stories260k/model-loftq-nf2-r8';
      const report = JSON.parse(fs.readFileSync(path.join(ws, out, 'loftq-report.json'), 'utf8')) as Report;
      const frame = await openInWebview(
        page,
        `${out}/model.safetensors`,
        'p.summary:has-text("LoftQ errors for 35 matrices")',
      );
      await frame.fill('#filter', 'q_proj');
      await until('filtered rows', async () => (await frame.$$('table.tensor-table tbody tr')).length === 5);
      const rows = await frame.$$eval('table.tensor-table tbody tr', (trs) =>
        trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)),
      );
      for (const cells of rows) {
        const m = report.matrices.find((x) => x.name === cells[0])!;
        assert.ok(m, `${cells[0]} in the report`);
        assert.deepEqual(cells.slice(5), [String(m.bits), m.relError.toFixed(5), m.qloraRelError.toFixed(5)]);
      }
      await screenshot(page, 'viewer-errors');
    }),
  );

  /** LoftQ: Open Error Heatmap from the command palette, picking the report whose path contains `folder`. */
  const openHeatmapFromPalette = async (folder: string) => {
    const widget = page.locator('.quick-input-widget');
    const input = widget.locator('.quick-input-box input');
    // A heatmap revealed just before (Open Error Heatmap from the Explorer is async) can take focus
    // back and close the pick before it is typed into: then it is opened again.
    for (let attempt = 0; ; attempt++) {
      try {
        // Keys typed while a webview has focus go to the webview: give the workbench focus first.
        await page.locator('.tabs-container .tab.active').click();
        await runCommand(page, 'LoftQ: Open Error Heatmap');
        await until(
          'the report quick pick',
          async () => (await widget.locator('.monaco-list-row').filter({ hasText: 'loftq-report.json' }).count()) > 0,
          10_000,
        );
        await input.fill(folder, { timeout: 5_000 });
        await until(
          `${folder} to be the active item`,
          async () => ((await widget.locator('.monaco-list-row.focused').first().textContent()) ?? '').includes(folder),
          5_000,
        );
        await input.press('Enter', { timeout: 5_000 });
        break;
      } catch (e) {
        if (attempt >= 2) throw e;
        await page.keyboard.press('Escape');
      }
    }
    const tab = page.locator('.tabs-container .tab.active', { hasText: `LoftQ Heatmap — ${folder}` });
    await until(`the ${folder} heatmap tab to be active`, async () => (await tab.count()) === 1, 20_000);
  };

  test(
    'a calibrated run: the heatmap offers output error; reopening a report reuses its tab',
    { skip: noEngine },
    shot('heatmap-output', async () => {
      const reportPath = await writeCalibratedRun(ws, 'model-loftq-calibrated');
      const report = JSON.parse(fs.readFileSync(reportPath, 'utf8')) as Report;
      assert.ok(report.matrices.every((m) => m.outputRelError !== undefined && m.bestIter !== undefined));
      const rel = 'stories260k/model-loftq-calibrated/loftq-report.json';
      await contextMenu(page, rel, 'Open Error Heatmap');
      const frame = await webviewFrame(page, 'button[data-space="output"]', 60_000);
      assert.equal(await frame.$eval('header h1', (e) => e.textContent), 'model-loftq-calibrated');
      const facts = await headerFacts(frame);
      assert.equal(facts.calibration, 'tokens: 4 sequences, 128 tokens');
      const outMean = avg(report.matrices.map((m) => Math.fround(m.outputRelError!)));
      const outMeans = facts['mean output error'];
      assert.ok(outMeans.startsWith(`LoftQ ${outMean.toFixed(4)} · QLoRA `), outMeans);
      await frame.click('button[data-space="output"]');
      const cells = await frame.$$eval('.grid .cell[data-name]', (els) =>
        els.map((e) => [e.getAttribute('data-name'), Number(e.getAttribute('data-value')), e.textContent] as const),
      );
      assert.equal(cells.length, report.matrices.length);
      for (const [name, value, text] of cells) {
        const m = report.matrices.find((x) => x.name === name)!;
        assert.equal(value, Math.fround(m.outputRelError!), name!);
        assert.equal(text, m.outputRelError!.toFixed(4), name!);
      }
      assert.match((await frame.$eval('.legend .help', (e) => e.textContent)) ?? '', /^Output error after LoftQ/);
      await frame.click('button[data-metric="outputRatio"]');
      const m0 = report.matrices[0];
      assert.equal(
        await frame.$eval(`.grid .cell[data-name="${m0.name}"]`, (e) => e.textContent),
        `${(Math.fround(m0.qloraOutputRelError!) / Math.fround(m0.outputRelError!)).toFixed(2)}×`,
      );
      // The sparkline marks the iteration the run kept.
      await frame.hover(`.grid .cell[data-name="${m0.name}"]`);
      assert.equal(
        await frame.$eval('.details .spark-best title', (e) => e.textContent),
        `iteration ${m0.bestIter}: ${m0.relErrorPerIter[m0.bestIter! - 1].toFixed(5)} (kept)`,
      );
      await screenshot(page, 'heatmap-output');
      // Opening the same report (or the NF2 one from before) again shows the tab already open.
      const tabs = (name: string) =>
        page.locator('.tabs-container .tab', { hasText: `LoftQ Heatmap — ${name}` }).count();
      // (Explorer rows are found by depth and name, so the NF2 report is picked in the command's quick pick.)
      await contextMenu(page, rel, 'Open Error Heatmap');
      await openHeatmapFromPalette('model-loftq-nf2-r8');
      await openHeatmapFromPalette('model-loftq-nf2-r8');
      const nf2Tab = page.locator('.tabs-container .tab.active', { hasText: 'model-loftq-nf2-r8' });
      await until('the NF2 heatmap tab to be active', async () => (await nf2Tab.count()) === 1);
      assert.equal(await tabs('model-loftq-calibrated'), 1);
      assert.equal(await tabs('model-loftq-nf2-r8'), 1);
    }),
  );

  test(
    'calibration from the wizard → Evaluate Outputs (held-out tokens) → the heatmap shows outputs and the model table',
    { skip: noEngine },
    shot('calibrate-evaluate', async () => {
      await runCommand(page, 'Notifications: Clear All Notifications');
      // The wizard's calibration step: sample from the model (its default sizes).
      await quantizeFromExplorer(`${CALIB_MODEL}/model.safetensors`, {
        bits: '4-bit',
        rank: '8',
        iters: '2',
        calibration: 'Sample from the model',
      });
      const outRel = `${CALIB_MODEL}/model-loftq-nf4-r8-cal`;
      const out = path.join(ws, outRel);
      const done = await notification(page, /LoftQ done: 35 matrices/, 180_000);
      const reportFile = path.join(out, 'loftq-report.json');
      const calibrated = JSON.parse(fs.readFileSync(reportFile, 'utf8')) as Report;
      assert.deepEqual(
        { ...calibrated.calibration, products: undefined },
        {
          source: 'generated',
          sequences: 16,
          tokens: 16 * 128,
          fullStatMaxDim: 8192,
          ridge: 0.01,
          seed: 0,
          products: undefined,
        },
        'only what the wizard asked: the default sizes, no ridge or seed of its own',
      );
      assert.ok(calibrated.matrices.every((m) => m.outputRelError !== undefined));

      // The offer when the run ends: held-out tokens, with a seed other than the calibration's, said so.
      await done.getByRole('button', { name: 'Evaluate Outputs' }).click();
      const widget = page.locator('.quick-input-widget');
      await until(
        'the held-out tokens item',
        async () =>
          /seed 1: the calibration sampled with seed 0, so none of its tokens are measured/.test(
            (await widget.textContent().catch(() => '')) ?? '',
          ),
        20_000,
      );
      await answerQuickInput(page, /^Evaluate Model Outputs: /);
      const evaluated = await notification(page, /Model outputs of .*model-loftq-nf4-r8-cal: KL LoftQ [\d.]+ vs QLoRA/);
      const model = (JSON.parse(fs.readFileSync(reportFile, 'utf8')) as Report).model!;
      assert.deepEqual(model.generated, { sequences: 16, length: 128, seed: 1 });
      assert.ok(model.loftq.kl < model.qlora.kl, JSON.stringify(model));
      await evaluated.getByRole('button', { name: 'Open Heatmap' }).click();
      const frame = await webviewFrame(page, 'table.model caption', 60_000);
      assert.equal(
        await frame.$eval('table.model caption', (e) => e.textContent),
        'Model outputs vs the original on 16 held-out sequences × 128 tokens sampled from the model (seed 1)',
      );
      assert.equal(
        await frame.$eval('table.model tr.loftq td.kl', (e) => e.textContent),
        `${model.loftq.kl.toFixed(3)} (${model.loftq.klMedian.toFixed(3)}, ${model.loftq.klP99.toFixed(2)})`,
      );
      assert.equal((await frame.$$('button[data-space="output"]')).length, 1, 'the outputs toggle');
      await screenshot(page, 'heatmap-eval');

      // The heatmap's own button evaluates again (typed sizes); the open heatmap updates.
      await frame.click('button.evaluate');
      await answerQuickInput(page, /^Evaluate Model Outputs: /, '4,32');
      await notification(page, /Model outputs of .*: KL LoftQ .*4 held-out sequences × 32 tokens/);
      await until(
        'the heatmap to show the new evaluation',
        async () =>
          /on 4 held-out sequences × 32 tokens sampled from the model \(seed 1\)$/.test(
            (await frame.$eval('table.model caption', (e) => e.textContent).catch(() => '')) ?? '',
          ),
        20_000,
      );
      // And the Explorer offers it on the output folder.
      await runCommand(page, 'Notifications: Clear All Notifications');
      await contextMenu(page, outRel, 'Evaluate Model Outputs');
      await answerQuickInput(page, /^Evaluate Model Outputs: /, '2,16');
      await notification(page, /Model outputs of .*2 held-out sequences × 16 tokens/);
    }),
  );

  test(
    'Analyze without a plan → Plan Mixed Precision… makes loftq.json; Apply keeps a hand override it agrees with',
    { skip: noEngine },
    shot('analyze-plan', async () => {
      await runCommand(page, 'Notifications: Clear All Notifications');
      await contextMenu(page, `${CALIB_MODEL}/model.safetensors`, 'Analyze with LoftQ');
      await answerQuickInput(page, /^Analyze \S+ with LoftQ \(1\/3\)$/);
      await answerQuickInput(page, /^Analyze \S+ with LoftQ \(2\/3\)$/);
      // Calibrated: the analysis records output errors and the planner minimises them.
      await answerQuickInput(page, /^Analyze \S+ with LoftQ \(3\/3\)$/, 'Sample from the model');
      const analysed = await notification(
        page,
        new RegExp(
          `LoftQ analysis of model\\.safetensors: .*report in ${CALIB_MODEL}/loftq-analysis/loftq-report\\.json`,
        ),
        240_000,
      );
      await analysed.getByRole('button', { name: 'Plan Mixed Precision…' }).click();
      const planFile = path.join(ws, CALIB_MODEL, 'loftq.json');
      // Written whole, not just created (the editor's file system writes after it creates).
      await until(
        'loftq.json made for the planner',
        async () => fs.existsSync(planFile) && fs.readFileSync(planFile, 'utf8').trimEnd().endsWith('}'),
      );
      assert.deepEqual(JSON.parse(fs.readFileSync(planFile, 'utf8')), {
        checkpoint: './model.safetensors',
        defaults: { bits: 4, rank: 16, iters: 5, quantizer: 'nf' },
        analysis: './loftq-analysis/loftq-report.json',
        calibration: { generate: { sequences: 16, length: 128 } },
      });
      const analysisReport = JSON.parse(
        fs.readFileSync(path.join(ws, CALIB_MODEL, 'loftq-analysis', 'loftq-report.json'), 'utf8'),
      ) as Report;
      assert.ok(analysisReport.analyses!.every((a) => a.matrices.every((m) => m.outputRelError! >= 0)));
      const plan = async () => {
        const box = page.locator('.quick-input-widget');
        await until(
          'the budget box',
          async () =>
            /^Plan Mixed Precision: /.test(
              (await box
                .locator('.quick-input-title')
                .textContent()
                .catch(() => '')) ?? '',
            ),
          20_000,
        );
        await box.locator('.quick-input-box input').press('Enter');
        return notification(
          page,
          /Apply the planner's plan to .*loftq\.json\? [\d.]+ bits per weight.*predicted output error \(calibrated\)/,
          60_000,
        );
      };
      const written = (t: string) => t.trimEnd().endsWith('}');
      let before = fs.readFileSync(planFile, 'utf8');
      await (await plan()).getByRole('button', { name: 'Apply' }).click();
      await until("the planner's plan on disk", async () => {
        const t = fs.readFileSync(planFile, 'utf8');
        return written(t) && t !== before;
      });
      // Two hand overrides: one the planner agrees with (layer 0's q_proj at its planned bits), one it does not.
      const { compilePlan, parsePlan, settingsFor } = await import('../../server/src/plan/planfile');
      const planned = parsePlan(fs.readFileSync(planFile, 'utf8')).plan;
      const q0 = settingsFor(compilePlan(planned), 'model.layers.0.self_attn.q_proj.weight')!;
      const q1 = settingsFor(compilePlan(planned), 'model.layers.1.self_attn.q_proj.weight')!;
      const agreed = { match: 'model.layers.0.self_attn.q_proj', bits: q0.bits };
      const other = q1.bits === 8 ? 2 : 8;
      const hand = {
        ...planned,
        overrides: [agreed, { match: 'model.layers.1.self_attn.q_proj', bits: other }, ...planned.overrides!],
      };
      fs.writeFileSync(planFile, JSON.stringify(hand, null, 2) + '\n');
      before = fs.readFileSync(planFile, 'utf8');
      await runCommand(page, 'Notifications: Clear All Notifications');
      await contextMenu(page, `${CALIB_MODEL}/loftq.json`, 'Plan Mixed Precision…');
      const ask = await plan();
      const q1Name = 'model\\.layers\\.1\\.self_attn\\.q_proj';
      assert.match(
        (await ask.textContent()) ?? '',
        new RegExp(`It replaces your override: '${q1Name}' bits ${other} → ${q1.bits} \\(1 matrix\\)`),
      );
      await ask.getByRole('button', { name: 'Apply' }).click();
      await until('the second plan on disk', async () => {
        const t = fs.readFileSync(planFile, 'utf8');
        return written(t) && t !== before;
      });
      const after = parsePlan(fs.readFileSync(planFile, 'utf8')).plan;
      assert.deepEqual(after.overrides![0], agreed, 'the hand override the planner agrees with stays, first');
      assert.ok(!after.overrides!.some((o) => o.match === 'model.layers.1.self_attn.q_proj' && o.bits === other));
      // Leave the Problems panel to the tests after this one: the plan (and its diagnostics) go.
      await runCommand(page, 'View: Close All Editors');
      fs.rmSync(planFile);
    }),
  );

  test(
    'the viewer on one shard: note and link to its checkpoint, module tree, natural order',
    shot('viewer-shard', async () => {
      const frame = await openInWebview(page, `sharded/${SHARD_1}`, '.shard-note');
      assert.equal(
        await frame.$eval('.shard-note', (e) => e.textContent),
        'Shard 1 of 2 of a sharded checkpoint (25 tensors in all, listed in model.safetensors.index.json). ' +
          'Quantize works on the whole checkpoint.',
      );
      assert.equal(await frame.$eval('#quantize', (e) => e.textContent), 'Quantize the whole checkpoint with LoftQ');
      // Natural order: layer 2 before layer 10 (plain string order would put 10 first).
      const names = await frame.$$eval('table.tensor-table tbody td.name', (tds) => tds.map((t) => t.textContent));
      const even = Array.from({ length: SHARDED_LAYERS / 2 }, (_, i) => 2 * i);
      const perLayer = (l: number) => [
        `model.layers.${l}.mlp.down_proj.weight`,
        `model.layers.${l}.self_attn.q_proj.weight`,
      ];
      assert.deepEqual(names, ['model.embed_tokens.weight', ...even.flatMap(perLayer)]);
      // The tree: layers in natural order under model.layers; a layer narrows the table to its tensors.
      const layers = await frame.$$eval(
        'li[data-path="model.layers"] > details > ul > li > details > summary .label',
        (els) => els.map((e) => e.textContent),
      );
      assert.deepEqual(layers, even.map(String));
      await frame.click('li[data-path="model.layers.10"] > details > summary button.node');
      await until(
        'the table to show layer 10 only',
        async () => (await frame.$$('table.tensor-table tbody tr')).length === 2,
      );
      assert.deepEqual(await frame.$$eval('table.tensor-table tbody td.name', (tds) => tds.map((t) => t.textContent)), [
        'model.layers.10.mlp.down_proj.weight',
        'model.layers.10.self_attn.q_proj.weight',
      ]);
      await screenshot(page, 'viewer-shard');
      await frame.click('#open-index');
      const indexTab = page.locator('.tabs-container .tab.active', { hasText: 'model.safetensors.index.json' });
      await indexTab.waitFor({ timeout: 20_000 });
    }),
  );

  test(
    'the viewer on a broken file says why and offers no Quantize',
    shot('viewer-broken', async () => {
      const frame = await openInWebview(page, BROKEN_FILE, '.error[role="alert"]');
      assert.match((await frame.$eval('.error', (e) => e.textContent)) ?? '', /broken\.safetensors/);
      assert.equal((await frame.$$('#quantize')).length, 0);
      assert.equal((await frame.$$('#reopen')).length, 1);
    }),
  );

  test(
    'loftq.json: diagnostics in the Problems panel, a quick fix edits the file',
    { skip: noEngine },
    shot('plan', async () => {
      const planFile = path.join(ws, 'stories260k', 'loftq.json');
      fs.writeFileSync(
        planFile,
        [
          '{',
          '  // a plan as a user writes it: comments stay when a quick fix edits it',
          '  "checkpoint": "./model.safetensors",',
          '  "defaults": { "bits": 2, "rank": 8, "iters": 2 },',
          '  "overrides": [',
          '    { "match": "model.layers.*.self_attn.q_proj", "bits": 4 },',
          '    { "match": "model.layers.*.mlp.nonexistent", "bits": 8 }',
          '  ]',
          '}',
          '',
        ].join('\n'),
      );
      const row = await explorerRow(page, 'stories260k/loftq.json');
      await row.dblclick();
      await page.locator('.monaco-editor .view-lines', { hasText: 'nonexistent' }).first().waitFor();
      await page.keyboard.press('Control+Shift+M');
      const problem = page
        .locator('.markers-panel .monaco-list-row', { hasText: "'model.layers.*.mlp.nonexistent' matches no tensor" })
        .first();
      await problem.waitFor({ timeout: 60_000 });
      await screenshot(page, 'plan-problems');
      // Go to the problem, open the quick fixes (Ctrl+.) and apply the removal.
      await problem.dblclick();
      await page.locator('.monaco-editor .view-line', { hasText: 'nonexistent' }).first().click();
      const fix = page.getByText("Remove override 'model.layers.*.mlp.nonexistent'").first();
      await until(
        'the quick fix menu',
        async () => {
          await page.keyboard.press('Control+.');
          try {
            await fix.waitFor({ timeout: 3000 });
            return true;
          } catch {
            await page.keyboard.press('Escape');
            return false;
          }
        },
        30_000,
      );
      // The menu opens with its first fix focused; Enter applies it (a mouse click races the menu's layout).
      await page.keyboard.press('Enter');
      await until(
        'the override to disappear from the editor',
        async () => !(await page.locator('.monaco-editor .view-lines').first().textContent())?.includes('nonexistent'),
      );
      await page.keyboard.press('Control+S');
      await until('the file on disk to change', async () => {
        const t = fs.readFileSync(planFile, 'utf8');
        return written(t) && !t.includes('nonexistent');
      });
      const text = fs.readFileSync(planFile, 'utf8');
      assert.match(text, /\/\/ a plan as a user writes it/);
      assert.match(text, /"match": "model\.layers\.\*\.self_attn\.q_proj", "bits": 4/);
      await until(
        'the warning to leave the Problems panel',
        async () =>
          (await page.locator('.markers-panel .monaco-list-row', { hasText: 'matches no tensor' }).count()) === 0,
      );
      await screenshot(page, 'plan-fixed');
    }),
  );

  test(
    "the whole loop: analyze → heatmap → planner's plan → plan diagnostics → quick fix → rerun",
    { skip: noEngine },
    shot('loop', async () => {
      const planFile = path.join(ws, 'stories260k', 'loftq.json');
      fs.writeFileSync(
        planFile,
        [
          '{',
          '  // a plan as a user writes it: comments stay when the planner edits it',
          '  "checkpoint": "./model.safetensors",',
          '  "defaults": { "bits": 2, "rank": 8, "iters": 2 },',
          '  "overrides": [',
          '    { "match": "model.layers.*.self_attn.q_proj", "bits": 4 }',
          '  ]',
          '}',
          '',
        ].join('\n'),
      );
      await runCommand(page, 'Notifications: Clear All Notifications');
      // Analyze from the plan's context menu: the widths 2, 3, 4 and the rank offered first.
      await contextMenu(page, 'stories260k/loftq.json', 'Analyze with LoftQ');
      await answerQuickInput(page, /^Analyze \S+ with LoftQ \(1\/3\)$/);
      await answerQuickInput(page, /^Analyze \S+ with LoftQ \(2\/3\)$/);
      await answerQuickInput(page, /^Analyze \S+ with LoftQ \(3\/3\)$/); // no calibration: weight error
      const analysed = await notification(
        page,
        /LoftQ analysis of model\.safetensors: mean LoftQ error 2-bit [\d.]+, 3-bit [\d.]+, 4-bit [\d.]+/,
        240_000,
      );
      const analysisFile = path.join(ws, 'stories260k', 'loftq-analysis', 'loftq-report.json');
      const analysis = JSON.parse(fs.readFileSync(analysisFile, 'utf8')) as Report;
      assert.deepEqual(
        analysis.analyses!.map((a) => a.bits),
        [2, 3, 4],
      );
      await analysed.getByRole('button', { name: 'Open Heatmap' }).click();
      const frame = await webviewFrame(page, '.grid .cell[data-name]', 60_000);
      await until(
        'the analysis heatmap',
        async () => (await frame.$$('.grid .cell[data-name]')).length === analysis.matrices.length,
      );

      // The planner's plan within the plan's budget, shown as a diff, applied.
      const before = fs.readFileSync(planFile, 'utf8');
      await contextMenu(page, 'stories260k/loftq.json', 'Plan Mixed Precision…');
      // The budget box is pre-filled (2.5 bits per weight): Enter accepts it.
      const budgetBox = page.locator('.quick-input-widget');
      await until(
        'the budget box',
        async () =>
          /^Plan Mixed Precision: /.test(
            (await budgetBox
              .locator('.quick-input-title')
              .textContent()
              .catch(() => '')) ?? '',
          ),
        20_000,
      );
      await budgetBox.locator('.quick-input-box input').press('Enter');
      const apply = await notification(
        page,
        /Apply the planner's plan to .*loftq\.json\? [\d.]+ bits per weight/,
        60_000,
      );
      await page.locator('.tabs-container .tab', { hasText: "planner's plan" }).first().waitFor();
      await apply.getByRole('button', { name: 'Apply' }).click();
      await until("the planner's plan on disk", async () => {
        const t = fs.readFileSync(planFile, 'utf8');
        return written(t) && t !== before;
      });
      const planned = fs.readFileSync(planFile, 'utf8');
      assert.match(planned, /\/\/ a plan as a user writes it: comments stay when the planner edits it/);

      // Its diagnostics use the analysis; a worst-matrices warning offers a quick fix.
      const row = await explorerRow(page, 'stories260k/loftq.json');
      await row.dblclick();
      await page.keyboard.press('Control+Shift+M');
      const worst = page
        .locator('.markers-panel .monaco-list-row', { hasText: /LoftQ error [\d.–]+, top \d+% of the model/ })
        .first();
      await worst.waitFor({ timeout: 60_000 });
      await worst.dblclick();
      const fix = page
        .locator('.action-widget .monaco-list-row', { hasText: /^(Quantize .* at \d bits|Raise rank of .*)$/ })
        .first();
      await until(
        'the quick fix menu on the worst matrices',
        async () => {
          await page.keyboard.press('Control+.');
          try {
            await fix.waitFor({ timeout: 3000 });
            return true;
          } catch {
            await page.keyboard.press('Escape');
            return false;
          }
        },
        30_000,
      );
      const shotFile = await screenshot(page, 'plan-quickfix');
      if (process.env.LOFTQ_DOCS_IMAGES)
        fs.copyFileSync(shotFile, path.join(process.env.LOFTQ_DOCS_IMAGES, 'plan-quickfix.png'));
      const shown = await page.locator('.monaco-editor .view-lines').first().textContent();
      await page.keyboard.press('Enter');
      await until(
        'the quick fix to edit the plan',
        async () => (await page.locator('.monaco-editor .view-lines').first().textContent()) !== shown,
      );
      await page.keyboard.press('Control+S');
      await until('the fixed plan on disk', async () => fs.readFileSync(planFile, 'utf8') !== planned);

      // Rerun with the plan: the picks say it is applied; Enter through every step.
      await runCommand(page, 'Notifications: Clear All Notifications');
      await contextMenu(page, 'stories260k/loftq.json', 'Quantize with LoftQ');
      await answerQuickInput(page, /^Quantize \S+ with LoftQ \(1\/\d+\) — loftq\.json applied$/);
      const widget = page.locator('.quick-input-widget');
      for (let k = 0; k < 6; k++) {
        const title = (await widget.isVisible())
          ? ((await widget.locator('.quick-input-title').textContent()) ?? '')
          : '';
        if (!/with LoftQ \(\d+\/\d+\)/.test(title)) break;
        await answerQuickInput(page, new RegExp(`^${title.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`));
      }
      await notification(page, /LoftQ done: 35 matrices of model\.safetensors/, 240_000);
      // The output folder is named after the plan's defaults (model-loftq-nf2-r…): the newest report there.
      const dir = path.join(ws, 'stories260k');
      const outs = fs
        .readdirSync(dir)
        .filter((d) => d.startsWith('model-loftq-nf') && fs.existsSync(path.join(dir, d, 'loftq-report.json')));
      const newest = outs.sort(
        (a, b) =>
          fs.statSync(path.join(dir, b, 'loftq-report.json')).mtimeMs -
          fs.statSync(path.join(dir, a, 'loftq-report.json')).mtimeMs,
      )[0];
      const rerun = JSON.parse(fs.readFileSync(path.join(dir, newest, 'loftq-report.json'), 'utf8')) as Report;
      assert.ok(new Set(rerun.matrices.map((m) => m.bits)).size > 1, 'the run followed the mixed plan');
      // The plan sees the run at once: its summary (information: a code lens, no squiggle) shows the run's mean error.
      const mean = rerun.matrices.reduce((s, m) => s + m.relError, 0) / rerun.matrices.length;
      // The run's heatmap is in front: bring the plan back, at its top, where the summary lens sits
      // (the editor comes back scrolled to the quick fix, which may be below a long plan's first screen).
      await (await explorerRow(page, 'stories260k/loftq.json')).dblclick();
      await page.keyboard.press('Control+Home');
      const lenses = page.locator('.monaco-editor .codelens-decoration');
      let seen: string[] = [];
      // The two roundings of the mean: the server sums in the plan's order, this test in the report's.
      const expected = new Set([mean * (1 - 1e-12), mean * (1 + 1e-12)].map((m) => m.toFixed(2)));
      await until(
        `the plan's summary lens with the run's mean (${[...expected].join(' or ')})`,
        async () => {
          seen = (await lenses.allTextContents()).map((t) => t.trim()).filter(Boolean);
          return seen.some((t) => [...expected].some((e) => t.includes(`35 matrices: mean LoftQ error ${e}`)));
        },
        60_000,
      ).catch((e: Error) => {
        throw new Error(`${e.message}; lenses seen: ${JSON.stringify(seen)}`);
      });
    }),
  );
});
