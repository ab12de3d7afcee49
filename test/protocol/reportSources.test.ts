// Protocol tier: a plan sees the results of runs at once (issue 11.1). A run writes its report
// into its output folder, not next to the plan; the server must use the newest reports of the
// plan's checkpoint: output folders of runs it started, reports it is told about (watched
// files, loftq/readReport, the startup scan) and the plan's own `analysis` path.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Diagnostic, DiagnosticSeverity, HoverRequest, MarkupContent } from 'vscode-languageserver-protocol';
import { openCheckpoint } from '../../server/src/checkpoint';
import { Methods } from '../../server/src/protocol/lsp_ext';
import type { AnalysisEntry, QuantizeResult, Report } from '../../server/src/protocol/lsp_ext';
import { repoRoot } from '../helpers';
import { uriOf } from './lspClient';
import { rangeOf, withServer, workspace } from './support';

const PLAN = `{
  "checkpoint": "ckpt/model.safetensors",
  "defaults": { "bits": 2, "rank": 8, "iters": 2 }
}
`;

const summary = (ds: Diagnostic[]) => ds.find((d) => d.code === 'summary')?.message;
const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;

async function hoverText(
  c: Parameters<Parameters<typeof withServer>[1]>[0],
  uri: string,
  text: string,
  needle: string,
): Promise<string> {
  const r = rangeOf(text, needle);
  const h = await c.conn.sendRequest(HoverRequest.type, {
    textDocument: { uri },
    position: { line: r.start.line, character: r.start.character + 2 },
  });
  return (h!.contents as MarkupContent).value;
}

/** A report of the stories260K checkpoint: an analysis at 2 and 4 bits with every error `e2` / `e4`. */
async function analysisReport(ckpt: string, e2: number, e4: number): Promise<Report> {
  const ck = await openCheckpoint(ckpt);
  const targets = ck.tensors.filter((t) => /_proj\.weight$/.test(t.name));
  const analyses: AnalysisEntry[] = [
    [2, e2],
    [4, e4],
  ].map(([bits, e]) => ({
    bits,
    rank: 8,
    iters: 2,
    quantizer: 'nf',
    blockSize: 64,
    matrices: targets.map((t) => ({
      name: t.name,
      shape: [t.shape[0], t.shape[1]] as [number, number],
      relError: e,
      qloraRelError: 2 * e,
      frobeniusNorm: 1,
    })),
  }));
  return {
    version: 1,
    tool: 'loftq-lens test',
    checkpoint: ckpt,
    backend: 'cpu',
    settings: { bits: 2, rank: 8, iters: 2, quantizer: 'nf', blockSize: 64 },
    matrices: [],
    totals: { matrices: 0, parameters: 0, seconds: 0, backboneBytes: 0, adapterBytes: 0 },
    analyses,
  };
}

test("after loftq/quantize the plan of that checkpoint uses the run's report at once (no watcher event)", async () => {
  const { root, ckptDir } = workspace();
  const plan = path.join(root, 'loftq.json');
  const uri = uriOf(plan);
  fs.writeFileSync(plan, PLAN);
  await withServer(root, async (c) => {
    await c.diagnosticsFor(uri, (d) => !!summary(d)?.includes('no analysis yet'));
    await c.open(uri, PLAN);
    const out = path.join(root, 'runs', 'nf2');
    const checkpoint = path.join(ckptDir, 'model.safetensors');
    const done = (await c.conn.sendRequest(Methods.quantize, {
      checkpoint,
      out,
      plan,
      settings: { bits: 2, rank: 8, iters: 2, quantizer: 'nf', blockSize: 64 },
      backend: 'cpu',
      workers: 1,
    })) as QuantizeResult;
    assert.equal(done.reportPath, path.join(out, 'loftq-report.json'));
    // The mean over the 35 matrices of the report on disk, as the summary rounds it.
    const onDisk: Report = JSON.parse(fs.readFileSync(done.reportPath, 'utf8'));
    const want = mean(onDisk.matrices.map((m) => m.relError)).toFixed(2);
    const ds = await c.diagnosticsFor(
      uri,
      (d) => !!summary(d)?.includes('mean LoftQ error'),
      "diagnostics with the run's errors",
    );
    assert.match(summary(ds)!, new RegExp(`^35 matrices: mean LoftQ error ${want.replace('.', '\\.')}, `));
    const text2 = PLAN.replace(
      '"defaults"',
      '"overrides": [{ "match": "model.layers.0.self_attn.q_proj" }],\n  "defaults"',
    );
    await c.change(uri, text2, 2);
    const h = await hoverText(c, uri, text2, '"model.layers.0.self_attn.q_proj"');
    const q0 = onDisk.matrices.find((m) => m.name === 'model.layers.0.self_attn.q_proj.weight')!;
    assert.ok(h.includes(`| model.layers.0.self_attn.q_proj | 64×64 | **${q0.relError.toFixed(2)}** |`), h);
    assert.ok(h.includes('from `runs/nf2/loftq-report.json`'), h);
  });
});

const REPORT_SOURCES =
  'a CLI run the client reads through loftq/readReport, a newer analysis, ' + "and the plan's `analysis` path";

test(REPORT_SOURCES, async () => {
  const { root, ckptDir } = workspace();
  const checkpoint = path.join(ckptDir, 'model.safetensors');
  const plan = path.join(root, 'loftq.json');
  const uri = uriOf(plan);
  fs.writeFileSync(plan, PLAN);
  // An analysis that exists before the server starts, deep in the workspace: the startup scan finds it.
  const early = path.join(root, 'analyses', 'old', 'loftq-report.json');
  fs.mkdirSync(path.dirname(early), { recursive: true });
  fs.writeFileSync(early, JSON.stringify(await analysisReport(checkpoint, 0.3, 0.1)));
  fs.utimesSync(early, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
  // A report of another checkpoint is never used, however new.
  const otherCk = path.join(root, 'other', 'model.safetensors');
  fs.mkdirSync(path.dirname(otherCk));
  fs.copyFileSync(checkpoint, otherCk);
  const foreign = path.join(root, 'other', 'analysis', 'loftq-report.json');
  fs.mkdirSync(path.dirname(foreign));
  fs.writeFileSync(foreign, JSON.stringify(await analysisReport(otherCk, 0.9, 0.8)));
  await withServer(root, async (c) => {
    let ds = await c.diagnosticsFor(uri, (d) => !!summary(d)?.includes('mean LoftQ error'), 'the scanned analysis');
    assert.match(summary(ds)!, /^35 matrices: mean LoftQ error 0\.30, /);

    // The CLI writes a run outside the workspace; the client shows its report (loftq/readReport).
    const out = fs.mkdtempSync(path.join(path.dirname(root), 'loftq-cli-out-'));
    try {
      const r = spawnSync(
        process.execPath,
        [
          path.join(repoRoot, 'dist', 'cli.js'),
          'quantize',
          checkpoint,
          '--out',
          out,
          '--bits',
          '2',
          '--rank',
          '8',
          '--iters',
          '2',
          '--backend',
          'cpu',
          '--workers',
          '1',
        ],
        { encoding: 'utf8' },
      );
      assert.equal(r.status, 0, r.stderr);
      const report = (await c.conn.sendRequest(Methods.readReport, { path: out })) as Report;
      const want = mean(report.matrices.map((m) => m.relError)).toFixed(2);
      assert.notEqual(want, '0.30');
      // The run's own numbers describe the files as written: they win at 2 bits; the analysis keeps 4 bits.
      ds = await c.diagnosticsFor(
        uri,
        (d) => !!summary(d)?.includes(`mean LoftQ error ${want}`),
        "the CLI run's errors",
      );
      const worst = ds.filter((d) => d.code === 'worst');
      assert.ok(
        worst.length > 0 && worst.every((d) => /; 4-bit gives 0\.10 for /.test(d.message)),
        worst.map((d) => d.message).join('\n'),
      );
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }

    // The plan names its analysis: only that file counts; a missing one is a warning on `analysis`.
    const named = PLAN.replace('"defaults"', '"analysis": "analyses/old/loftq-report.json",\n  "defaults"');
    await c.open(uri, named);
    ds = await c.diagnosticsFor(uri, (d) => !!summary(d)?.includes('mean LoftQ error 0.30'), 'the named analysis');
    const missing = named.replace('analyses/old/', 'analyses/none/');
    await c.change(uri, missing, 2);
    ds = await c.diagnosticsFor(uri, (d) => d.some((x) => x.code === 'report'), 'the missing analysis');
    const problem = ds.find((d) => d.code === 'report')!;
    assert.equal(problem.severity, DiagnosticSeverity.Warning);
    assert.equal(problem.message, "analysis 'analyses/none/loftq-report.json' does not exist");
    assert.deepEqual(problem.range, rangeOf(missing, '"analyses/none/loftq-report.json"'));
    assert.ok(summary(ds)!.includes('no analysis yet'), summary(ds));
  });
});
