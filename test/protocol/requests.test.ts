// Protocol tier: the custom requests that need no engine run, and the `loftq lsp --stdio` entry.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ResponseError } from 'vscode-languageserver-protocol';
import { encodeHeader, openCheckpoint } from '../../server/src/checkpoint';
import { inspectCheckpoint } from '../../server/src/engine/inspect';
import { Methods } from '../../server/src/protocol/lsp_ext';
import type { InspectResult, Report } from '../../server/src/protocol/lsp_ext';
import { repoRoot } from '../helpers';
import { LspClient, uriOf } from './lspClient';
import { rmrf, withServer, workspace } from './support';

test('loftq/inspect returns the header summary; bad checkpoints are one-line errors', async () => {
  const { root, ckptDir } = workspace();
  await withServer(root, async (c) => {
    const file = path.join(ckptDir, 'model.safetensors');
    const got = await c.conn.sendRequest<InspectResult>(Methods.inspect, { checkpoint: uriOf(file) });
    assert.deepEqual(got, inspectCheckpoint(await openCheckpoint(file)));
    assert.equal(got.totals.tensors, 47);
    assert.equal(got.shard, undefined, 'a file no index lists is not a shard');
    // One shard of a sharded checkpoint: the server says which index lists it, so the viewer
    // offers the whole checkpoint (the client reads no checkpoint file itself).
    const sharded = path.join(root, 'sharded');
    fs.mkdirSync(sharded);
    const header = encodeHeader([{ name: 'a.weight', dtype: 'F32', shape: [2] }]);
    for (const s of ['m-1.safetensors', 'm-2.safetensors'])
      fs.writeFileSync(path.join(sharded, s), Buffer.concat([header, Buffer.alloc(8)]));
    const weightMap = { 'a.weight': 'm-1.safetensors', 'b.weight': 'm-2.safetensors' };
    fs.writeFileSync(path.join(sharded, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
    const shard = await c.conn.sendRequest<InspectResult>(Methods.inspect, {
      checkpoint: uriOf(path.join(sharded, 'm-2.safetensors')),
    });
    assert.deepEqual(shard.shard, {
      index: path.join(sharded, 'model.safetensors.index.json'),
      number: 2,
      of: 2,
      tensors: 2,
    });
    await assert.rejects(
      c.conn.sendRequest(Methods.inspect, { checkpoint: path.join(root, 'nope.safetensors') }),
      (e: ResponseError<unknown>) =>
        e.code === -32602 && e.message === `${path.join(root, 'nope.safetensors')}: does not exist`,
    );
  });
});

test('loftq/readReport reads a report by file, folder or plan path; null when there is none', async () => {
  const { root } = workspace();
  await withServer(root, async (c) => {
    assert.equal(await c.conn.sendRequest(Methods.readReport, { path: root }), null);
    const report: Report = {
      version: 1,
      tool: 'loftq-lens test',
      checkpoint: 'x',
      backend: 'cpu',
      settings: { bits: 2, rank: 4, iters: 1, quantizer: 'nf', blockSize: 64 },
      matrices: [
        {
          name: 'a.weight',
          shape: [2, 2],
          dtype: 'F32',
          bits: 2,
          rank: 1,
          iters: 1,
          quantizer: 'nf',
          blockSize: 64,
          relError: 0.1,
          relErrorPerIter: [0.1],
          qloraRelError: 0.2,
          frobeniusNorm: 1,
          seconds: 0,
        },
      ],
      totals: { matrices: 1, parameters: 4, seconds: 0, backboneBytes: 1, adapterBytes: 16 },
    };
    const file = path.join(root, 'loftq-report.json');
    fs.writeFileSync(file, JSON.stringify(report));
    for (const p of [file, root, path.join(root, 'loftq.json'), uriOf(file)])
      assert.deepEqual(await c.conn.sendRequest(Methods.readReport, { path: p }), report, p);
    fs.writeFileSync(file, '{"version": 2}');
    await assert.rejects(c.conn.sendRequest(Methods.readReport, { path: file }), /is not a loftq report/);
  });
});

test('`loftq lsp --stdio` serves the same diagnostics; without a transport it is a usage error', async () => {
  const bad = spawnSync(process.execPath, [path.join(repoRoot, 'dist', 'cli.js'), 'lsp'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.equal(bad.stderr, 'loftq: lsp needs a transport: --stdio (or --node-ipc, --socket=PORT, --pipe=NAME)\n');
  const { root } = workspace();
  const plan = path.join(root, 'loftq.json');
  fs.writeFileSync(plan, '{ "checkpoint": "missing.safetensors" }');
  // A minimal client: no configuration, no dynamic registration, no progress.
  const c = await LspClient.start({ root, entry: 'cli', capabilities: {} });
  try {
    const ds = await c.diagnosticsFor(uriOf(plan), (d) => d.length > 0);
    assert.deepEqual(
      ds.map((d) => d.message),
      ["checkpoint 'missing.safetensors' does not exist"],
    );
    assert.deepEqual(c.registrations, []);
  } finally {
    await c.stop();
    assert.equal(c.child.exitCode, 0, 'shutdown + exit ends the process cleanly');
    rmrf(root);
  }
});
