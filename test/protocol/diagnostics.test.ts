// Protocol tier: the bundled server over stdio, driven by a real JSON-RPC client, on a
// copy of the stories260K checkpoint (5 layers × q,k,v,o [64|32 × 64], gate,up [172×64], down [64×172]).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CodeLensRequest, Diagnostic, DiagnosticSeverity, FileChangeType } from 'vscode-languageserver-protocol';
import { uriOf } from './lspClient';
import { rangeOf, withServer, workspace } from './support';

const brief = (ds: Diagnostic[]) =>
  ds
    .map((d) => ({ severity: d.severity, message: d.message, range: d.range }))
    .sort(
      (a, b) =>
        a.range.start.line - b.range.start.line ||
        a.range.start.character - b.range.start.character ||
        a.message.localeCompare(b.message),
    );

const PLAN = `{
  // closed, found by the startup scan
  "checkpoint": "./ckpt/model.safetensors",
  "defaults": { "bits": 2, "rank": 48 },
  "overrides": [
    { "match": "model.layers.*.mlp.nothing", "bits": 4 },
    { "match": "model.norm", "bits": 4 },
    { "match": "model.layers.{0..1}.self_attn.{k_proj,v_proj}", "rank": 40 }
  ]
}
`;

test('a closed plan found at startup gets diagnostics at the exact JSON nodes', async () => {
  const { root } = workspace();
  const plan = path.join(root, 'loftq.json');
  fs.writeFileSync(plan, PLAN);
  await withServer(root, async (c) => {
    const ds = await c.diagnosticsFor(uriOf(plan), (d) => d.length > 0);
    // Sizes of this plan (docs/planner.md's cost model: packed 2-bit codes + double-quantized
    // scales nb + 4·⌈nb/256⌉ + 4 per matrix; untouched tensors as stored): per layer codes
    // 2·1024 + 2·512 + 3·2752 = 11 328 B, scales 2·72 + 2·40 + 3·180 = 764 B; ×5 = 60 460, plus
    // embeddings 131 072 and norms 2 816 → 194 348 B. Adapter (f32,
    // r·(out+in)·4): layers 2–4 at rank 48: 221 952 B each; layers 0–1 (k,v at rank 40): 215 808 → 1 097 472 B.
    assert.deepEqual(
      brief(ds),
      brief([
        {
          // 8 · 60 460 B / 226 560 weights = 2.13 bits (codes and scales: what a budget counts); information: a hint.
          severity: DiagnosticSeverity.Hint,
          message:
            '35 matrices to quantize at 2.13 bits per weight (codes and scales); backbone 194.3 kB + adapter 1.1 MB; ' +
            'no analysis yet (loftq-report.json)',
          range: rangeOf(PLAN, '"./ckpt/model.safetensors"'),
        },
        {
          severity: DiagnosticSeverity.Error,
          message: 'rank 48 is larger than min(out, in) = 32 of k_proj, v_proj of layers 2–4 (6 matrices)',
          range: rangeOf(PLAN, '48'),
        },
        {
          severity: DiagnosticSeverity.Warning,
          message: "'model.layers.*.mlp.nothing' matches no tensor in model.safetensors",
          range: rangeOf(PLAN, '"model.layers.*.mlp.nothing"'),
        },
        {
          severity: DiagnosticSeverity.Warning,
          message: "'model.norm' matches 1 tensor but none that is quantized (2-D linear weights among the targets)",
          range: rangeOf(PLAN, '"model.norm"'),
        },
        {
          severity: DiagnosticSeverity.Error,
          message: 'rank 40 is larger than min(out, in) = 32 of k_proj, v_proj of layers 0–1 (4 matrices)',
          range: rangeOf(PLAN, '40'),
        },
      ] as Diagnostic[]),
    );
    assert.ok(ds.every((d) => d.source === 'loftq'));
    // The summary, a hint, is also a code lens (plain text: no command) over the checkpoint line.
    const lenses = await c.conn.sendRequest(CodeLensRequest.type, { textDocument: { uri: uriOf(plan) } });
    assert.deepEqual(lenses, [
      {
        range: rangeOf(PLAN, '"./ckpt/model.safetensors"'),
        command: { title: ds.find((d) => d.code === 'summary')!.message, command: '' },
      },
    ]);
    // The server asked to watch plan files, reports and checkpoints.
    const watchers = c.registrations.find((r) => r.method === 'workspace/didChangeWatchedFiles')?.registerOptions as {
      watchers: { globPattern: string }[];
    };
    assert.deepEqual(
      watchers.watchers.map((w) => w.globPattern),
      ['**/loftq.json', '**/loftq-report.json', '**/*.safetensors', '**/model.safetensors.index.json'],
    );

    // Deleting the plan clears its diagnostics.
    fs.rmSync(plan);
    await c.filesChanged([{ uri: uriOf(plan), type: FileChangeType.Deleted }]);
    await c.diagnosticsFor(uriOf(plan), (d) => d.length === 0, 'cleared diagnostics');
  });
});

test('checkpoint problems: missing, not safetensors, pickle — then fixed by editing', async () => {
  const { root } = workspace();
  fs.writeFileSync(path.join(root, 'notes.safetensors'), 'hello world, not a checkpoint');
  fs.writeFileSync(path.join(root, 'model.bin'), new Uint8Array([0x80, 0x02, 0x7d, 0x71]));
  const uri = uriOf(path.join(root, 'loftq.json'));
  await withServer(root, async (c) => {
    const text = (ck: string) => `{ "checkpoint": ${JSON.stringify(ck)}, "defaults": { "bits": 4 } }`;
    const only = async (ck: string, version: number) => {
      if (version === 1) await c.open(uri, text(ck));
      else await c.change(uri, text(ck), version);
      const ds = await c.diagnosticsFor(
        uri,
        (d) => c.diagnostics.get(uri)!.version === version && d.length > 0,
        `diagnostics v${version}`,
      );
      return ds;
    };
    let ds = await only('./missing.safetensors', 1);
    assert.deepEqual(brief(ds), [
      {
        severity: DiagnosticSeverity.Error,
        message: "checkpoint './missing.safetensors' does not exist",
        range: rangeOf(text('./missing.safetensors'), '"./missing.safetensors"'),
      },
    ]);
    ds = await only('notes.safetensors', 2);
    assert.equal(ds.length, 1);
    assert.equal(ds[0].severity, DiagnosticSeverity.Error);
    assert.match(ds[0].message, /^checkpoint 'notes\.safetensors' header length \d+ exceeds the 100 MB limit$/);
    assert.deepEqual(ds[0].range, rangeOf(text('notes.safetensors'), '"notes.safetensors"'));
    ds = await only('model.bin', 3);
    assert.match(
      ds[0].message,
      new RegExp(
        "^checkpoint 'model\\.bin' is a pickle checkpoint, which can run code when loaded and is never opened here; " +
          'convert it to safetensors first',
      ),
    );
    ds = await only('ckpt', 4); // a folder holding model.safetensors
    assert.deepEqual(
      ds.map((d) => d.severity),
      [DiagnosticSeverity.Hint],
    );
    // 4-bit codes 22 656 B + scales 764 B per layer, × 5 layers = 117 100 B over 226 560 weights.
    assert.match(ds[0].message, /^35 matrices to quantize at 4\.13 bits per weight \(codes and scales\)/);
  });
});

test('JSON syntax and structure problems are located; closing falls back to the file on disk', async () => {
  const { root } = workspace();
  const file = path.join(root, 'loftq.json');
  const onDisk = '{ "checkpoint": "ckpt/model.safetensors", "defaults": { "bits": 5 } }';
  fs.writeFileSync(file, onDisk);
  const uri = uriOf(file);
  await withServer(root, async (c) => {
    await c.diagnosticsFor(uri, (d) => d.some((x) => x.message.startsWith("'bits' must be")));
    const broken = '{ "checkpoint": "ckpt/model.safetensors" "defaults": {} }';
    await c.open(uri, broken);
    const ds = await c.diagnosticsFor(uri, (d) => d.some((x) => x.message.startsWith('JSON syntax')));
    const syn = ds.find((d) => d.message === 'JSON syntax: CommaExpected')!;
    assert.deepEqual(syn.range, rangeOf(broken, '"defaults"'));
    await c.close(uri);
    const back = await c.diagnosticsFor(
      uri,
      (d) => d.some((x) => x.message.startsWith("'bits' must be")),
      'diagnostics from disk after close',
    );
    const bits = back.find((d) => d.message.startsWith("'bits'"))!;
    assert.equal(bits.message, "'bits' must be 1, 2, 3, 4 or 8 (got 5)");
    assert.deepEqual(bits.range, rangeOf(onDisk, '5'));
  });
});
