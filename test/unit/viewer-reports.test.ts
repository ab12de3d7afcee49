// Which report the viewer shows for a file (ReportIndex.find): a run's report beside its output,
// the last run remembered under the checkpoint it was given — for a shard, the folder of its
// index, where the viewer asks by the shard's path — and the editor's analysis in the
// checkpoint's folder. On real files; the memento is an in-memory one.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as vscode from 'vscode';
import { ANALYSIS_FOLDER, REPORT_FILE, ReportIndex } from '../../client/src/reports';
import { originNote } from '../../webviews/src/originNote';
import { removeTree, tempDir } from '../helpers';

function memento(): vscode.Memento {
  const m = new Map<string, unknown>();
  return {
    keys: () => [...m.keys()],
    get: <T>(k: string, d?: T) => (m.has(k) ? (m.get(k) as T) : d),
    update: async (k: string, v: unknown) => void m.set(k, v),
  } as vscode.Memento;
}

test("a shard finds the report of its checkpoint's run; a file its analysis; a run's output its report", () => {
  const ws = tempDir('loftq-viewer-reports-');
  try {
    const ckpt = path.join(ws, 'big');
    fs.mkdirSync(ckpt);
    const index = path.join(ckpt, 'model.safetensors.index.json');
    const shard = path.join(ckpt, 'model-00002-of-00003.safetensors');
    for (const f of [index, shard]) fs.writeFileSync(f, '');
    const runReport = path.join(ws, 'big-loftq-nf2-r16', REPORT_FILE);
    fs.mkdirSync(path.dirname(runReport));
    fs.writeFileSync(runReport, '{}');
    const ix = new ReportIndex(memento());
    // Quantize remembers the checkpoint it ran on: the sharded folder.
    ix.remember(ckpt, runReport);
    assert.equal(ix.find(ckpt), runReport);
    assert.equal(ix.find(shard), undefined, 'asked by the shard alone, the run is not found');
    assert.equal(ix.find(shard, index), runReport, 'with the index the shard belongs to, it is');

    // A single-file model analysed from the editor: loftq-analysis/ in its folder.
    const single = path.join(ws, 'small', 'model.safetensors');
    fs.mkdirSync(path.dirname(single));
    fs.writeFileSync(single, '');
    assert.equal(ix.find(single), undefined);
    const analysis = path.join(ws, 'small', ANALYSIS_FOLDER, REPORT_FILE);
    fs.mkdirSync(path.dirname(analysis));
    fs.writeFileSync(analysis, '{}');
    assert.equal(ix.find(single), analysis);
    // A later run remembered for it wins over the folder's analysis; a report beside the file over both.
    ix.remember(single, runReport);
    assert.equal(ix.find(single), runReport);
    const beside = path.join(ws, 'small', REPORT_FILE);
    fs.writeFileSync(beside, '{}');
    assert.equal(ix.find(single), beside);
    // A remembered report that is gone is not offered.
    removeTree(path.dirname(runReport));
    assert.equal(ix.find(shard, index), undefined);
  } finally {
    removeTree(ws);
  }
});

test("the viewer's note on a LoftQ output or adapter names the checkpoint and offers nothing to quantize", () => {
  assert.match(
    originNote({ kind: 'output', of: 'stories/model.safetensors' }),
    /LoftQ run of stories\/model\.safetensors:/,
  );
  assert.match(originNote({ kind: 'adapter', of: 'x' }), /^The LoRA adapter .* of x, not a model/);
  assert.match(originNote({ kind: 'output' }), /^The output of a LoftQ run: /);
});
