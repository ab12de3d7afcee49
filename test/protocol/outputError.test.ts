// Protocol tier (issue 10 §3, editor part): when a report has output errors
// ‖(W − Q − B·A)·S‖/‖W·S‖ for its matrices, the plan's "worst matrices" are ranked by them,
// with the weight error beside; without them, by the weight error as before.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint } from '../../server/src/checkpoint';
import type { MatrixReport, Report } from '../../server/src/protocol/lsp_ext';
import { uriOf } from './lspClient';
import { withServer, workspace } from './support';

const PLAN = `{
  "checkpoint": "ckpt/model.safetensors",
  "defaults": { "bits": 2, "rank": 8, "iters": 2 }
}
`;

/** Weight error 0.20 everywhere but q_proj of layer 0 (0.50); output error 0.10 but up/down_proj of layer 4
 *  (0.35, 0.40). */
async function report(ckpt: string, withOutput: boolean): Promise<Report> {
  const ck = await openCheckpoint(ckpt);
  const matrices: MatrixReport[] = ck.tensors
    .filter((t) => /_proj\.weight$/.test(t.name))
    .map((t) => {
      const output =
        t.name === 'model.layers.4.mlp.down_proj.weight'
          ? 0.4
          : t.name === 'model.layers.4.mlp.up_proj.weight'
            ? 0.35
            : 0.1;
      return {
        name: t.name,
        shape: [t.shape[0], t.shape[1]],
        dtype: t.dtype,
        bits: 2,
        rank: 8,
        iters: 2,
        quantizer: 'nf',
        blockSize: 64,
        relError: t.name === 'model.layers.0.self_attn.q_proj.weight' ? 0.5 : 0.2,
        relErrorPerIter: [0.2],
        qloraRelError: 0.6,
        frobeniusNorm: 1,
        seconds: 0,
        ...(withOutput ? { outputRelError: output, qloraOutputRelError: 2 * output } : {}),
      };
    });
  return {
    version: 1,
    tool: 'loftq-lens test',
    checkpoint: ckpt,
    backend: 'cpu',
    settings: { bits: 2, rank: 8, iters: 2, quantizer: 'nf', blockSize: 64 },
    matrices,
    totals: { matrices: matrices.length, parameters: 0, seconds: 0, backboneBytes: 0, adapterBytes: 0 },
  };
}

test('worst matrices by output error when the report has it, by weight error otherwise', async () => {
  const { root, ckptDir } = workspace();
  const ckpt = path.join(ckptDir, 'model.safetensors');
  const plan = path.join(root, 'loftq.json');
  const reportFile = path.join(root, 'loftq-report.json');
  fs.writeFileSync(plan, PLAN);
  fs.writeFileSync(reportFile, JSON.stringify(await report(ckpt, false)));
  const uri = uriOf(plan);
  await withServer(root, async (c) => {
    const worst = async (pattern: RegExp) =>
      (await c.diagnosticsFor(uri, (d) => d.some((x) => x.code === 'worst' && pattern.test(x.message))))
        .filter((d) => d.code === 'worst')
        .map((d) => d.message);
    // Weight errors only: q_proj of layer 0 (0.50) leads; 2 of 35 matrices make the top 5%.
    const byWeight = await worst(/LoftQ error/);
    assert.equal(byWeight.length, 1);
    assert.match(byWeight[0], /^q_proj\b.* of layer 0: 2-bit LoftQ error 0\.20–0\.50, top 6% of the model$/);

    fs.writeFileSync(reportFile, JSON.stringify(await report(ckpt, true)));
    await c.filesChanged([{ uri: uriOf(reportFile) }]);
    const byOutput = await worst(/output error/);
    assert.equal(byOutput.length, 1);
    assert.match(
      byOutput[0],
      /: 2-bit output error 0\.35–0\.40 \(LoftQ weight error 0\.20\), top 6% of the model by output error$/,
    );
    assert.match(byOutput[0], /up_proj/);
    assert.match(byOutput[0], /down_proj/);
    assert.doesNotMatch(byOutput[0], /q_proj/);

    // Back to weight errors only, then the output-error numbers as a calibrated analysis (`loftq analyze`
    // with calibration): ranked the same way as the quantize report's.
    fs.writeFileSync(reportFile, JSON.stringify(await report(ckpt, false)));
    await c.filesChanged([{ uri: uriOf(reportFile) }]);
    assert.deepEqual(await worst(/LoftQ error 0\.20–0\.50/), byWeight);
    const quantized = await report(ckpt, true);
    const analysis: Report = {
      ...quantized,
      matrices: [],
      analyses: [
        {
          bits: 2,
          rank: 8,
          iters: 2,
          quantizer: 'nf',
          blockSize: 64,
          matrices: quantized.matrices.map((m) => ({
            name: m.name,
            shape: m.shape,
            relError: m.relError,
            qloraRelError: m.qloraRelError,
            frobeniusNorm: 1,
            outputRelError: m.outputRelError,
            qloraOutputRelError: m.qloraOutputRelError,
            outputNorm: 1,
          })),
        },
      ],
    };
    fs.writeFileSync(reportFile, JSON.stringify(analysis));
    await c.filesChanged([{ uri: uriOf(reportFile) }]);
    const fromAnalysis = await worst(/output error/);
    assert.deepEqual(fromAnalysis, byOutput);
  });
});
