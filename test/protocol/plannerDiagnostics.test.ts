// Protocol tier: the planner's prediction next to the current plan (on `budget`), and the
// NF4 reload check per plan entry. Reports are written here with chosen numbers; every
// expected figure is derived in the test from the report (the table's math identity
// error(b, r) = (relError·‖W‖)² + Σ_{r≤i<R} σ_i²) and the planner's own functions.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CodeAction, CodeActionRequest, Diagnostic, DiagnosticSeverity } from 'vscode-languageserver-protocol';
import { openCheckpoint, TensorInfo } from '../../server/src/checkpoint';
import { adapterBytesOf, choiceBytes, DEFAULT_COST } from '../../server/src/plan/planner/cost';
import { planReport } from '../../server/src/plan/planner/plan';
import { compilePlan, parsePlan, settingsFor } from '../../server/src/plan/planfile';
import type { AnalysisEntry, MatrixReport, Report } from '../../server/src/protocol/lsp_ext';
import { uriOf } from './lspClient';
import { applyTextEdits, rangeOf, withServer, workspace } from './support';

const R = 16; // analysed rank
const layerOf = (name: string) => Number(/layers\.(\d+)\./.exec(name)![1]);
const norm = (name: string) => 1 + 0.25 * layerOf(name);
const relErr = (name: string, bits: number) => (bits === 4 ? 0.05 : name.endsWith('down_proj.weight') ? 0.5 : 0.2);
// A decaying residual spectrum: truncating rank 16 to 8 costs a little, not nothing.
const spectrum = (name: string) => Array.from({ length: R }, (_, i) => (0.02 * norm(name) * (R - i)) / R);

async function targetsOf(ckpt: string): Promise<TensorInfo[]> {
  return (await openCheckpoint(ckpt)).tensors.filter((t) => /_proj\.weight$/.test(t.name));
}

function baseReport(ckpt: string): Report {
  return {
    version: 1,
    tool: 'loftq-lens test',
    checkpoint: ckpt,
    backend: 'cpu',
    settings: { bits: 2, rank: R, iters: 5, quantizer: 'nf', blockSize: 64 },
    matrices: [],
    totals: { matrices: 0, parameters: 0, seconds: 0, backboneBytes: 0, adapterBytes: 0 },
  };
}

function analysisReport(ckpt: string, targets: TensorInfo[]): Report {
  const analyses: AnalysisEntry[] = [2, 4].map((bits) => ({
    bits,
    rank: R,
    iters: 5,
    quantizer: 'nf',
    blockSize: 64,
    matrices: targets.map((t) => ({
      name: t.name,
      shape: [t.shape[0], t.shape[1]] as [number, number],
      relError: relErr(t.name, bits),
      qloraRelError: 2 * relErr(t.name, bits),
      frobeniusNorm: norm(t.name),
      residualSpectrum: spectrum(t.name),
    })),
  }));
  return { ...baseReport(ckpt), analyses };
}

/** The planner diagnostic's message for a plan text, from first principles plus planReport at the plan's size
 *  (its backbone bits for an avgBits budget, codes + scales + adapters for a bytes budget); the bits shown are
 *  the backbone's (codes + scales). */
function expectedPlanner(text: string, report: Report, targets: TensorInfo[]): { message: string; ratio: number } {
  const cp = compilePlan(parsePlan(text).plan);
  const cost = { ...DEFAULT_COST, blockSize: 64, adapterBytes: adapterBytesOf(targets[0].dtype) };
  let error = 0,
    bytes = 0,
    backbone = 0,
    params = 0;
  for (const t of targets) {
    const { bits, rank } = settingsFor(cp, t.name)!;
    const tail = spectrum(t.name)
      .slice(rank)
      .reduce((s, x) => s + x * x, 0);
    error += (relErr(t.name, bits) * norm(t.name)) ** 2 + tail;
    bytes += choiceBytes(t.shape[0], t.shape[1], bits, rank, cost);
    backbone += choiceBytes(t.shape[0], t.shape[1], bits, rank, { ...cost, countAdapters: false });
    params += t.shape[0] * t.shape[1];
  }
  // The planner at this plan's size as its budget counts it: avgBits the backbone only, bytes with the adapters.
  const byBits = parsePlan(text).plan.budget?.avgBits !== undefined;
  const budget = byBits ? { avgBits: ((8 * backbone) / params) * (1 + 1e-9) } : { bytes }; // rounding slack
  const planner = planReport(report, {
    budget,
    ranks: [8, 16],
    objective: 'absolute',
    cost: { ...cost, countAdapters: !byBits },
  }).plan.error;
  const ratio = planner / error;
  const bitsPerWeight = ((8 * backbone) / params).toFixed(2);
  const same = `the same size (${bitsPerWeight} bits per weight, ${(bytes / 1e3).toFixed(1)} kB with adapters)`;
  const totals =
    `Σ‖W − Q − AB‖² over the planned matrices, predicted from the analysis, is ${planner.toPrecision(3)} ` +
    `against this plan's ${error.toPrecision(3)}`;
  const less = `${Math.round(100 * (1 - ratio))}% less error`;
  const message =
    ratio < 0.9
      ? `the planner's plan of ${same} is predicted to leave ${less}: ${totals}; the quick fix applies it`
      : ratio >= 0.995
        ? `the planner finds no better plan of ${same}: ${totals}`
        : `the planner's plan of ${same} would leave ${less}, under the 10% worth a change: ${totals}`;
  return { message, ratio };
}

const only = (ds: Diagnostic[], code: string) => ds.filter((d) => d.code === code);

test("the planner's prediction sits next to this plan's on `budget`; its quick fix applies the planner", async () => {
  const { root, ckptDir } = workspace();
  const ckpt = path.join(ckptDir, 'model.safetensors');
  const targets = await targetsOf(ckpt);
  const report = analysisReport(ckpt, targets);
  fs.writeFileSync(path.join(root, 'loftq-report.json'), JSON.stringify(report));
  // 4 bits spent on the easy q_proj, the hard down_proj left at 2 bits, rank 16 everywhere.
  // (Rank-16 F32 adapters alone cost 16 bits per weight of a 64×64 matrix, hence the budget.)
  const text = `{
  "checkpoint": "ckpt/model.safetensors",
  "defaults": { "bits": 2, "rank": 16 },
  "overrides": [
    { "match": "model.layers.*.self_attn.q_proj", "bits": 4 }
  ],
  "budget": { "avgBits": 14 }
}`;
  const plan = path.join(root, 'loftq.json');
  fs.writeFileSync(plan, text);
  const uri = uriOf(plan);
  await withServer(root, async (c) => {
    await c.open(uri, text);
    const ds = only(await c.diagnosticsFor(uri, (d) => only(d, 'planner').length > 0), 'planner');
    const want = expectedPlanner(text, report, targets);
    assert.ok(want.ratio < 0.9, `the planner does clearly better here (${want.ratio})`);
    assert.deepEqual(
      ds.map((d) => ({ severity: d.severity, message: d.message, range: d.range })),
      [{ severity: DiagnosticSeverity.Warning, message: want.message, range: rangeOf(text, '"budget"') }],
    );

    // The mixed-precision action is the quick fix of that diagnostic; applied, the plan is the planner's own.
    const actions = (await c.conn.sendRequest(CodeActionRequest.type, {
      textDocument: { uri },
      range: ds[0].range,
      context: { diagnostics: ds },
    })) as CodeAction[];
    const fix = actions.find((a) => a.title.startsWith('Apply mixed-precision plan within budget: planner'))!;
    assert.ok(fix, actions.map((a) => a.title).join('; '));
    assert.equal(fix.kind, 'quickfix');
    assert.deepEqual(fix.diagnostics, ds);
    const edited = applyTextEdits(text, fix.edit!.changes![uri]);
    await c.change(uri, edited, 2);
    const after = only(
      await c.diagnosticsFor(uri, (d) => c.diagnostics.get(uri)!.version === 2 && only(d, 'planner').length > 0),
      'planner',
    );
    const again = expectedPlanner(edited, report, targets);
    assert.ok(
      again.ratio >= 0.9 && again.ratio <= 1 + 1e-9,
      `the planner's plan is (near) its own optimum (${again.ratio})`,
    );
    assert.deepEqual(
      after.map((d) => ({ severity: d.severity, message: d.message, range: d.range })),
      // As good as the planner's: information, not a squiggle.
      [{ severity: DiagnosticSeverity.Hint, message: again.message, range: rangeOf(edited, '"budget"') }],
    );

    // Without a budget node, or with a rank the analysis cannot predict (above the analysed 16), no comparison.
    const noBudget = text.replace(',\n  "budget": { "avgBits": 14 }', '');
    await c.change(uri, noBudget, 3);
    assert.deepEqual(
      only(
        await c.diagnosticsFor(
          uri,
          (d) => c.diagnostics.get(uri)!.version === 3 && d.some((x) => x.code === 'summary'),
        ),
        'planner',
      ),
      [],
    );
    const rank32 = text.replace('"rank": 16', '"rank": 32');
    await c.change(uri, rank32, 4);
    assert.deepEqual(
      only(
        await c.diagnosticsFor(uri, (d) => c.diagnostics.get(uri)!.version === 4 && d.some((x) => x.code === 'budget')),
        'planner',
      ),
      [],
    );
  });
});

test('a calibrated analysis: the comparison is in the output error the planner minimises, and says so', async () => {
  const { root, ckptDir } = workspace();
  const ckpt = path.join(ckptDir, 'model.safetensors');
  const targets = await targetsOf(ckpt);
  // Output errors twice the weight errors, ‖W·S‖ = 3‖W‖, the output spectrum the weight one's ×2,
  // and a gain (KL per unit squared output error) that grows with the layer.
  const gain = (name: string) => 0.5 + layerOf(name);
  const base = analysisReport(ckpt, targets);
  const report: Report = {
    ...base,
    analyses: base.analyses!.map((a) => ({
      ...a,
      matrices: a.matrices.map((m) => ({
        ...m,
        outputRelError: 2 * m.relError,
        qloraOutputRelError: 2 * m.qloraRelError,
        outputNorm: 3 * m.frobeniusNorm,
        outputSpectrum: m.residualSpectrum!.map((x) => 2 * x),
        outputGain: gain(m.name),
      })),
    })),
  };
  fs.writeFileSync(path.join(root, 'loftq-report.json'), JSON.stringify(report));
  const text = `{
  "checkpoint": "ckpt/model.safetensors",
  "defaults": { "bits": 2, "rank": 16 },
  "budget": { "avgBits": 14 }
}`;
  const plan = path.join(root, 'loftq.json');
  fs.writeFileSync(plan, text);
  const uri = uriOf(plan);
  await withServer(root, async (c) => {
    await c.open(uri, text);
    const [d] = only(await c.diagnosticsFor(uri, (x) => only(x, 'planner').length > 0), 'planner');
    // This plan (2 bits, the analysed rank 16 everywhere): Σ gain · (outputRelError · ‖W·S‖)².
    const own = targets.reduce((s, t) => s + gain(t.name) * (2 * relErr(t.name, 2) * 3 * norm(t.name)) ** 2, 0);
    assert.match(
      d.message,
      new RegExp(
        "Σ gain·‖\\(W − Q − AB\\)·S‖² \\(calibrated output error, weighted by each matrix's measured effect on " +
          "the model's KL\\) over the planned matrices, predicted from the analysis, is [\\d.e+-]+ " +
          `against this plan's ${own.toPrecision(3).replace('.', '\\.')}$`,
      ),
    );
  });
});

const RELOAD_WARNINGS =
  'a quantize report with NF4 reload errors: a warning with its quick fixes where the reload raises the error, ' +
  'a hint where it lowers it';

test(RELOAD_WARNINGS, async () => {
  const { root, ckptDir } = workspace();
  const ckpt = path.join(ckptDir, 'model.safetensors');
  const targets = await targetsOf(ckpt);
  const text = `{
  "checkpoint": "ckpt/model.safetensors",
  "defaults": { "bits": 3, "rank": 8 },
  "overrides": [
    { "match": "model.layers.*.mlp.down_proj", "bits": 2 },
    { "match": "model.layers.*.self_attn.v_proj", "bits": 3 },
    { "match": "model.layers.0.self_attn.q_proj", "bits": 8 }
  ],
  "budget": { "avgBits": 4 }
}`;
  const bitsOf = (n: string) =>
    n.endsWith('down_proj.weight') ? 2 : n === 'model.layers.0.self_attn.q_proj.weight' ? 8 : 3;
  // As `loftq quantize` writes them: 3- and 8-bit NF errors change on reload, NF2 survives. The
  // v_proj override's errors fall on reload (as they can: NF4 of an NF3 Q may land nearer W).
  // Two exceptions: layer 4's o_proj changes by under 1% (reloadWarnings' tolerance) and
  // layer 4's k_proj was quantized at 4 bits by an older plan (the report is stale there).
  const matrices: MatrixReport[] = targets.map((t, i) => {
    const bits = t.name === 'model.layers.4.self_attn.k_proj.weight' ? 4 : bitsOf(t.name);
    const relError = bits === 2 ? 0.3 : bits === 3 ? 0.15 + 0.002 * i : 0.01;
    const reload =
      bits === 2 || bits === 4
        ? relError
        : t.name === 'model.layers.4.self_attn.o_proj.weight'
          ? relError * 1.005
          : t.name.includes('v_proj')
            ? relError - 0.01
            : bits === 3
              ? relError + 0.03
              : 0.035;
    return {
      name: t.name,
      shape: [t.shape[0], t.shape[1]],
      dtype: t.dtype,
      bits,
      rank: 8,
      iters: 5,
      quantizer: 'nf',
      blockSize: 64,
      relError,
      relErrorPerIter: [relError],
      qloraRelError: 2 * relError,
      frobeniusNorm: 1,
      seconds: 0,
      nf4ReloadRelError: reload,
    };
  });
  fs.writeFileSync(path.join(root, 'loftq-report.json'), JSON.stringify({ ...baseReport(ckpt), matrices }));
  const plan = path.join(root, 'loftq.json');
  fs.writeFileSync(plan, text);
  const uri = uriOf(plan);
  await withServer(root, async (c) => {
    await c.open(uri, text);
    const ds = only(await c.diagnosticsFor(uri, (d) => only(d, 'reload').length > 0), 'reload');
    const byDefaults = matrices.filter(
      (m) => m.bits === 3 && !m.name.includes('v_proj') && m.name !== 'model.layers.4.self_attn.o_proj.weight',
    );
    const vProj = matrices.filter((m) => m.name.includes('v_proj'));
    assert.equal(byDefaults.length, 35 - 5 - 5 - 1 - 2);
    const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
    const change = (ms: MatrixReport[]) => {
      const before = mean(ms.map((m) => m.relError)),
        after = mean(ms.map((m) => m.nf4ReloadRelError!));
      return { before, after, percent: Math.abs((100 * (after - before)) / before).toFixed(0) };
    };
    const d = change(byDefaults),
      v = change(vProj),
      q0 = matrices.find((m) => m.bits === 8)!;
    assert.ok(d.after > d.before && v.after < v.before && q0.nf4ReloadRelError! > q0.relError);
    const why = (bits: number) =>
      `${bits}-bit NF values are not on the NF4 grid (block 64) to which bitsandbytes re-quantizes the stored ` +
      'backbone when the model is loaded in 4 bits: after loading, the error of ';
    const fixes = 'NF4/NF2 in blocks of 64 load unchanged; "format": "hqq" loads at the planned bits';
    assert.deepEqual(
      ds
        .map((d) => ({ severity: d.severity, message: d.message, range: d.range }))
        .sort((a, b) => a.range.start.line - b.range.start.line),
      [
        {
          severity: DiagnosticSeverity.Warning,
          range: rangeOf(text, '3'),
          message:
            why(3) +
            `these ${byDefaults.length} matrices rises from ${d.before.toFixed(2)} to ${d.after.toFixed(2)} ` +
            `on average (+${d.percent}%). ${fixes}`,
        },
        {
          // Lower after loading: information, no squiggle.
          severity: DiagnosticSeverity.Hint,
          range: rangeOf(text, '3', 1),
          message:
            why(3) +
            `these ${vProj.length} matrices falls from ${v.before.toFixed(2)} to ${v.after.toFixed(2)} ` +
            `on average (−${v.percent}%) — nothing to do, the reloaded weights are closer to the original`,
        },
        {
          severity: DiagnosticSeverity.Warning,
          range: rangeOf(text, '8', 1),
          message:
            why(8) +
            `q_proj of layer 0 rises from ${q0.relError.toFixed(2)} to ${q0.nf4ReloadRelError!.toFixed(2)} ` +
            `(+${((100 * (q0.nf4ReloadRelError! - q0.relError)) / q0.relError).toFixed(0)}%). ${fixes}`,
        },
      ],
    );
    // No analyses in a quantize report: no planner comparison, and nothing said about it.
    assert.deepEqual(only(c.diagnostics.get(uri)!.diagnostics, 'planner'), []);

    // The quick fixes of a rising entry: the two widths NF4 loads unchanged, and an HQQ export.
    const actionsOf = async (diag: Diagnostic) =>
      (await c.conn.sendRequest(CodeActionRequest.type, {
        textDocument: { uri },
        range: diag.range,
        context: { diagnostics: [diag] },
      })) as CodeAction[];
    const rising = ds.find((x) => x.severity === DiagnosticSeverity.Warning && x.range.start.line === 2)!;
    const actions = await actionsOf(rising);
    assert.deepEqual(
      actions.filter((a) => a.diagnostics?.length).map((a) => [a.title, !!a.isPreferred]),
      [
        ['Quantize the defaults at 4 bits (loads unchanged after the NF4 reload)', true],
        ['Quantize the defaults at 2 bits (loads unchanged after the NF4 reload)', false],
        ['Write an HQQ checkpoint instead ("quantizer": "hqq", "format": "hqq"): it loads at the planned bits', false],
      ],
    );
    const hqq = applyTextEdits(text, actions[2].edit!.changes![uri]);
    const hqqPlan = parsePlan(hqq).plan;
    assert.equal(hqqPlan.format, 'hqq');
    assert.equal(hqqPlan.defaults?.quantizer, 'hqq');
    // The falling entry offers nothing to fix.
    const falling = ds.find((x) => x.severity === DiagnosticSeverity.Hint)!;
    assert.deepEqual(
      (await actionsOf(falling)).filter((a) => a.diagnostics?.length),
      [],
    );

    // Applied, the 4-bit fix leaves the defaults at 4 bits: the report's 3-bit numbers no longer describe them.
    const four = applyTextEdits(text, actions[0].edit!.changes![uri]);
    assert.equal(parsePlan(four).plan.defaults?.bits, 4);
    await c.change(uri, four, 2);
    const later = only(
      await c.diagnosticsFor(uri, (d) => c.diagnostics.get(uri)!.version === 2 && d.length > 0),
      'reload',
    );
    assert.deepEqual(
      later.map((d) => d.range).sort((a, b) => a.start.line - b.start.line),
      [rangeOf(four, '3'), rangeOf(four, '8', 1)],
    );
  });
});
