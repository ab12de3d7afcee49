// Protocol tier (issue 26 §1): loftq.json's `calibration` block in the server — errors at the
// key for a missing file, bad sizes, an imatrix given as tokens (with the quick fix), a model
// without config.json; hovers that say the field and the CLI's words; `loftq/runContext` shows
// the block; and `loftq/quantize` with the plan runs calibrated by it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Diagnostic, DiagnosticSeverity, Hover, MarkupContent } from 'vscode-languageserver-protocol';
import { Methods } from '../../server/src/protocol/lsp_ext';
import type { QuantizeResult, RunContext } from '../../server/src/protocol/lsp_ext';
import { repoRoot } from '../helpers';
import { CALIBRATION_SPECS } from '../../server/src/registry';
import { uriOf } from './lspClient';
import { applyTextEdits, rangeOf, withServer, workspace } from './support';

const planText = (calibration: string) => `{
  "checkpoint": "./ckpt/model.safetensors",
  "defaults": { "bits": 4, "rank": 4, "iters": 1 },
  "targets": ["model.layers.0.self_attn.q_proj"],
  "calibration": ${calibration}
}
`;
const calibrationDiags = (ds: Diagnostic[]) =>
  ds.filter(
    (d) => d.code === 'calibration' || (d.code === 'plan' && /calibration|sequences|length|seed/.test(d.message)),
  );

test('calibration diagnostics, hovers, quick fix, run context and a calibrated run of the plan', async () => {
  const { root, ckptDir } = workspace();
  const planFile = path.join(root, 'loftq.json');
  const uri = uriOf(planFile);
  await withServer(root, async (c) => {
    // No config.json yet: sampling needs the model.
    let text = planText('{ "generate": { "sequences": 2, "length": 16 } }');
    await c.open(uri, text);
    let ds = await c.diagnosticsFor(uri, (d) => calibrationDiags(d).length > 0);
    assert.deepEqual(
      calibrationDiags(ds).map((d) => [d.severity, d.range, d.message.replace(/ \(the forward pass.*$/, '')]),
      [
        [
          DiagnosticSeverity.Error,
          rangeOf(text, '{ "sequences": 2, "length": 16 }'),
          `calibration needs the model: ${path.join(ckptDir, 'config.json')}: does not exist`,
        ],
      ],
    );
    fs.copyFileSync(path.join(repoRoot, 'examples', 'stories260k', 'config.json'), path.join(ckptDir, 'config.json'));
    c.filesChanged([{ uri: uriOf(path.join(ckptDir, 'model.safetensors')) }]);
    await c.change(uri, text, 2);
    ds = await c.diagnosticsFor(uri, (d) => calibrationDiags(d).length === 0, 'no calibration problem');

    // Bad sizes: errors at the key, with the registry's ranges.
    text = planText('{ "generate": { "sequences": 0, "length": 99999 } }');
    await c.change(uri, text, 3);
    ds = await c.diagnosticsFor(uri, (d) => calibrationDiags(d).length === 2);
    assert.deepEqual(
      calibrationDiags(ds).map((d) => [d.range, d.message]),
      [
        [rangeOf(text, '0', 1), "'sequences' must be an integer ≥ 1 (got 0)"],
        [rangeOf(text, '99999'), `'length' must be an integer ≤ ${CALIBRATION_SPECS.generateLength.max} (got 99999)`],
      ],
    );

    // A missing file, named with the path it was looked for at.
    text = planText('{ "file": "calib/ids.json", "ridge": 0.05 }');
    await c.change(uri, text, 4);
    ds = await c.diagnosticsFor(uri, (d) => calibrationDiags(d).some((x) => /does not exist/.test(x.message)));
    assert.deepEqual(
      calibrationDiags(ds).map((d) => [d.severity, d.range, d.message]),
      [
        [
          DiagnosticSeverity.Error,
          rangeOf(text, '"calib/ids.json"'),
          `calibration file 'calib/ids.json' does not exist (${path.join(root, 'calib', 'ids.json')})`,
        ],
      ],
    );
    // The hover on a key says what it does, and the CLI options that mean the same block.
    const hover = (await c.conn.sendRequest('textDocument/hover', {
      textDocument: { uri },
      position: rangeOf(text, 'ridge').start,
    })) as Hover;
    const md = (hover.contents as MarkupContent).value;
    assert.match(md, /^\*\*Calibrated LoftQ\*\* — tokens of ids\.json, ridge 0\.05/);
    assert.match(md, /`ridge`: λ relative to mean\(diag G\) in G \+ λI \(0–10000, default 0\.01\)/);
    assert.match(md, /Same as `loftq quantize --plan … --calib calib\/ids\.json --calib-ridge 0\.05`/);
    assert.deepEqual(hover.range, rangeOf(text, '"ridge"'));

    // An importance matrix given as tokens: an error with a quick fix that moves it to "imatrix".
    fs.writeFileSync(path.join(root, 'model.gguf'), 'GGUF');
    text = planText('{ "file": "model.gguf" }');
    await c.change(uri, text, 5);
    ds = await c.diagnosticsFor(uri, (d) => calibrationDiags(d).some((x) => /importance matrix/.test(x.message)));
    const wrong = calibrationDiags(ds).find((x) => /importance matrix/.test(x.message))!;
    const actions = (await c.conn.sendRequest('textDocument/codeAction', {
      textDocument: { uri },
      range: wrong.range,
      context: { diagnostics: [wrong] },
    })) as { title: string; edit: { changes: Record<string, { range: never; newText: string }[]> } }[];
    const fix = actions.find((a) => a.title === `Give 'model.gguf' as the calibration "imatrix"`);
    assert.ok(fix, JSON.stringify(actions.map((a) => a.title)));
    const fixed = applyTextEdits(text, fix.edit.changes[uri]);
    assert.deepEqual(JSON.parse(fixed).calibration, { imatrix: 'model.gguf' });

    // Sampling from the model: runContext shows the block; a run of the plan is calibrated by it.
    text = planText('{ "generate": { "sequences": 2, "length": 12, "seed": 5 } }');
    fs.writeFileSync(planFile, text);
    await c.change(uri, text, 6);
    const ctx = (await c.conn.sendRequest(Methods.runContext, { checkpoint: planFile })) as RunContext;
    assert.deepEqual(ctx.plan?.calibration, { generate: { sequences: 2, length: 12, seed: 5 } });
    assert.equal(ctx.forwardPassProblem, undefined);
    const done = (await c.conn.sendRequest(Methods.quantize, {
      checkpoint: path.join(ckptDir, 'model.safetensors'),
      out: path.join(root, 'out'),
      settings: { bits: 4, rank: 4, iters: 1, quantizer: 'nf', blockSize: 64 },
      plan: planFile,
      backend: 'cpu',
      workers: 1,
    })) as QuantizeResult;
    assert.equal(done.report.calibration?.source, 'generated');
    assert.equal(done.report.calibration?.seed, 5);
    assert.equal(done.report.calibration?.sequences, 2);
    assert.equal(done.report.calibration?.tokens, 24);
    assert.ok(done.report.matrices[0].outputRelError! > 0);
  });
});

test('runContext: a checkpoint without config.json says why no forward pass can run', async () => {
  const { root, ckptDir } = workspace();
  await withServer(root, async (c) => {
    const ctx = (await c.conn.sendRequest(Methods.runContext, {
      checkpoint: path.join(ckptDir, 'model.safetensors'),
    })) as RunContext;
    assert.match(ctx.forwardPassProblem ?? '', /config\.json: does not exist/);
  });
});
