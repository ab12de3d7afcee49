// Protocol tier (issue 26.2): `loftq/analyze` takes calibration as `loftq/quantize` does — the
// request's `calibration`, else the plan's `calibration` block — and the plan of that checkpoint is
// then planned in output error: `loftq/plan` says `errorMeasure: 'output'` and the code action's
// title names the calibrated output error. The calibration pass and the output-gain probes run on
// the server's calibration thread.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CodeAction, CodeActionRequest } from 'vscode-languageserver-protocol';
import { ERROR_MEASURE_LABELS, Methods } from '../../server/src/protocol/lsp_ext';
import type { AnalyzeParams, AnalyzeResult, PlanResult, Report } from '../../server/src/protocol/lsp_ext';
import { repoRoot } from '../helpers';
import { uriOf } from './lspClient';
import { withServer, workspace } from './support';

const PLAN = `{
  "checkpoint": "ckpt/model.safetensors",
  "defaults": { "bits": 2, "rank": 8 },
  "budget": { "avgBits": 3 },
  "calibration": { "generate": { "sequences": 2, "length": 32, "seed": 3 } }
}
`;

test("loftq/analyze calibrates from the plan's block; the planner then plans in output error", async () => {
  const { root, ckptDir } = workspace();
  fs.copyFileSync(path.join(repoRoot, 'examples', 'stories260k', 'config.json'), path.join(ckptDir, 'config.json'));
  const checkpoint = path.join(ckptDir, 'model.safetensors');
  const planFile = path.join(root, 'loftq.json');
  fs.writeFileSync(planFile, PLAN);
  const uri = uriOf(planFile);
  const reportPath = path.join(root, 'analysis', 'loftq-report.json');
  const params: AnalyzeParams = {
    checkpoint,
    report: reportPath,
    bits: [2, 4],
    rank: 8,
    iters: 1,
    quantizer: 'nf',
    blockSize: 64,
    spectrum: 8,
    plan: planFile,
    backend: 'wasm',
    workers: 1,
  };
  await withServer(root, async (c) => {
    // A bad calibration in the request is refused before any work, in one line.
    await assert.rejects(
      c.conn.sendRequest(Methods.analyze, { ...params, calibration: { generate: { sequences: 0, length: 32 } } }),
      (e: { code: number; message: string }) => e.code === -32602 && /--calib-generate takes N,LEN/.test(e.message),
    );
    assert.ok(!fs.existsSync(reportPath));

    const done = (await c.conn.sendRequest(Methods.analyze, params)) as AnalyzeResult;
    const report: Report = JSON.parse(fs.readFileSync(done.reportPath, 'utf8'));
    assert.equal(report.calibration?.source, 'generated');
    assert.equal(report.calibration?.seed, 3);
    assert.equal(report.calibration?.tokens, 64);
    assert.deepEqual(report.outputSensitivity, { bits: 4, sequences: 2, tokens: 64 });
    for (const a of report.analyses!) {
      assert.equal(a.matrices.length, 35);
      for (const m of a.matrices) {
        assert.ok(m.outputRelError! < m.qloraOutputRelError!, m.name);
        assert.equal(m.outputSpectrum!.length, 8, m.name);
        assert.ok(m.outputGain! > 0, m.name);
      }
    }

    const planned = (await c.conn.sendRequest(Methods.plan, { plan: uri })) as PlanResult;
    assert.equal(planned.errorMeasure, 'output');
    assert.ok(planned.plan.avgBits <= 3, `${planned.plan.avgBits} bits`);

    const diagnostics = await c.diagnosticsFor(uri, (d) => d.some((x) => x.code === 'budget'), 'the budget');
    const actions = (await c.conn.sendRequest(CodeActionRequest.type, {
      textDocument: { uri },
      range: diagnostics.find((d) => d.code === 'budget')!.range,
      context: { diagnostics: diagnostics.filter((d) => d.code === 'budget') },
    })) as CodeAction[];
    const apply = actions.find((a) => a.title.startsWith('Apply mixed-precision plan within budget: planner, '));
    assert.ok(apply, actions.map((a) => a.title).join('\n'));
    assert.ok(apply.title.includes(ERROR_MEASURE_LABELS.output), apply.title);
  });
});
