// Protocol tier (issue 11.2): `loftq/analyze` runs an analysis at several bit widths with
// progress and cancel, writes its report whole, and the plan of that checkpoint uses it at once;
// `loftq/plan` then returns the planner's plan as the plan file's new text.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CancellationTokenSource, CodeAction, CodeActionRequest, Diagnostic } from 'vscode-languageserver-protocol';
import { compilePlan, parsePlan, settingsFor } from '../../server/src/plan/planfile';
import { Methods } from '../../server/src/protocol/lsp_ext';
import type { AnalyzeParams, AnalyzeResult, PlanResult, Report } from '../../server/src/protocol/lsp_ext';
import { repoRoot } from '../helpers';
import { uriOf } from './lspClient';
import { withServer, workspace } from './support';

const PLAN = `{
  // the user's comment survives the planner's edit
  "checkpoint": "ckpt/model.safetensors",
  "defaults": { "bits": 2, "rank": 8 },
  "budget": { "avgBits": 3 }
}
`;

const ANALYZE_CANCEL_AND_FULL =
  'loftq/analyze: cancel leaves no report; ' +
  'a full analysis matches the CLI, feeds the plan, and loftq/plan edits it';

test(ANALYZE_CANCEL_AND_FULL, async () => {
  const { root, ckptDir } = workspace();
  const checkpoint = path.join(ckptDir, 'model.safetensors');
  const planFile = path.join(root, 'loftq.json');
  fs.writeFileSync(planFile, PLAN);
  const uri = uriOf(planFile);
  const reportPath = path.join(root, 'analysis', 'loftq-report.json');
  const params = (token: string): AnalyzeParams => ({
    checkpoint,
    report: reportPath,
    bits: [2, 4],
    rank: 8,
    iters: 1,
    quantizer: 'nf',
    blockSize: 64,
    spectrum: 8,
    plan: planFile,
    backend: 'cpu',
    workers: 1,
    workDoneToken: token,
  });
  await withServer(root, async (c) => {
    const before = await c.diagnosticsFor(uri, (d) => d.some((x) => x.message.includes('no analysis yet')));
    // The budget's quick fixes say why the planner's plan is not offered yet, and how to get it.
    const actionsOn = async (ds: Diagnostic[]) => {
      const budget = ds.filter((d) => d.code === 'budget');
      assert.equal(budget.length, 1);
      return (await c.conn.sendRequest(CodeActionRequest.type, {
        textDocument: { uri },
        range: budget[0].range,
        context: { diagnostics: budget },
      })) as CodeAction[];
    };
    await c.open(uri, PLAN);
    const early = await actionsOn(before);
    const disabled = early.find((a) => a.title === "Apply the planner's plan")!;
    assert.match(disabled.disabled!.reason, /^the planner needs an analysis of this checkpoint/);
    assert.equal(disabled.edit, undefined);
    assert.deepEqual(early.find((a) => a.command)!.command, {
      title: 'Analyze with LoftQ',
      command: 'loftq.analyze',
      arguments: [uri],
    });

    const cts = new CancellationTokenSource();
    const cancelled = c.conn.sendRequest(Methods.analyze, params('cancel-me'), cts.token);
    await c.until(
      () => c.progress.find((p) => p.token === 'cancel-me' && p.value.kind === 'begin'),
      'the analysis to begin',
    );
    cts.cancel();
    await assert.rejects(cancelled, (e: { code: number }) => e.code === -32800);
    assert.ok(!fs.existsSync(reportPath), 'no report after a cancel');

    const done = (await c.conn.sendRequest(Methods.analyze, params('full'))) as AnalyzeResult;
    assert.equal(done.reportPath, reportPath);
    const onDisk: Report = JSON.parse(fs.readFileSync(reportPath, 'utf8'));
    assert.deepEqual(done.report, onDisk);
    assert.deepEqual(
      onDisk.analyses!.map((a) => a.bits),
      [2, 4],
    );
    const reports = c.progress
      .filter((p) => p.token === 'full' && p.value.kind === 'report')
      .map((p) => p.value.message as string);
    assert.ok(
      reports.some((m) => /^matrix 35 of 35: /.test(m)),
      reports.join('\n'),
    );

    // The CLI's analysis of the same checkpoint with the same settings gives the same errors.
    const cliReport = path.join(root, 'cli-analysis.json');
    const r = spawnSync(
      process.execPath,
      [
        path.join(repoRoot, 'dist', 'cli.js'),
        'analyze',
        checkpoint,
        '--bits',
        '2,4',
        '--rank',
        '8',
        '--iters',
        '1',
        '--spectrum',
        '8',
        '--backend',
        'cpu',
        '--workers',
        '1',
        '--report',
        cliReport,
      ],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 0, r.stderr);
    const cli: Report = JSON.parse(fs.readFileSync(cliReport, 'utf8'));
    const errors = (x: Report) => x.analyses!.map((a) => a.matrices.map((m) => [m.name, m.relError, m.qloraRelError]));
    assert.deepEqual(errors(onDisk), errors(cli));

    // The plan uses the new analysis at once: mean of the 2-bit errors (its defaults' width).
    const mean2 =
      onDisk.analyses![0].matrices.reduce((s, m) => s + m.relError, 0) / onDisk.analyses![0].matrices.length;
    const after = await c.diagnosticsFor(
      uri,
      (d) => d.some((x) => x.code === 'summary' && x.message.includes(`mean LoftQ error ${mean2.toFixed(2)}`)),
      'the analysis in the plan',
    );
    const late = await actionsOn(after);
    assert.ok(
      late.some((a) => a.title.startsWith('Apply mixed-precision plan within budget: planner, ') && a.edit),
      late.map((a) => a.title).join('\n'),
    );
    assert.ok(!late.some((a) => a.disabled || a.command), 'nothing left to explain once the planner can run');

    const planned = (await c.conn.sendRequest(Methods.plan, { plan: uri })) as PlanResult;
    assert.ok(planned.plan.avgBits <= 3, `${planned.plan.avgBits} bits`);
    const text = planned.planText!;
    assert.match(text, /\/\/ the user's comment survives the planner's edit/);
    const cp = compilePlan(parsePlan(text).plan);
    for (const ch of planned.choices) {
      const s = settingsFor(cp, ch.name)!;
      assert.deepEqual([s.bits, s.rank], [ch.bits, ch.rank], ch.name);
    }
    assert.ok(
      planned.choices.some((ch) => ch.bits === 4) && planned.choices.some((ch) => ch.bits === 2),
      'a mixed plan at 3 bits',
    );
  });
});
