// Protocol tier: `loftq/eval` through a real LSP client. The result equals the CLI's on the same
// folder and tokens; progress names the passes; the server answers other requests while an
// evaluation runs (it is on a worker thread); cancel leaves the report as it was; bad tokens and
// paths outside the workspace are InvalidParams with one clear line.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CancellationTokenSource } from 'vscode-languageserver-protocol';
import { quantizeCheckpoint } from '../../server/src/engine/run';
import { Methods } from '../../server/src/protocol/lsp_ext';
import type { EvalParams, EvalResult } from '../../server/src/protocol/lsp_ext';
import { fixture, repoRoot, tempDir } from '../helpers';
import { withServer, workspace } from './support';

const CLI = path.join(repoRoot, 'dist', 'cli.js');

async function evalWorkspace() {
  const { root, ckptDir } = workspace();
  const config = path.join(repoRoot, 'examples', 'stories260k', 'config.json');
  fs.copyFileSync(config, path.join(ckptDir, 'config.json'));
  const out = path.join(root, 'out');
  const settings = { bits: 4, rank: 8, iters: 1, quantizer: 'nf' as const, blockSize: 64 };
  await quantizeCheckpoint(ckptDir, { out, workers: 'in-thread', settings });
  const tokens = path.join(root, 'tokens.json');
  fs.copyFileSync(fixture('stories260k-tokens.json'), tokens);
  // Twelve copies: long enough to send requests and a cancel while it runs.
  const many = path.join(root, 'many.json');
  const seqs = JSON.parse(fs.readFileSync(tokens, 'utf8'));
  fs.writeFileSync(many, JSON.stringify(Array.from({ length: 12 }, () => seqs).flat()));
  return { root, ckptDir, out, tokens, many };
}

test("loftq/eval: the CLI's figures, progress per pass, a responsive server, cancel, bad input", async () => {
  const w = await evalWorkspace();
  const cli = spawnSync(
    process.execPath,
    [
      CLI,
      'eval',
      w.ckptDir,
      w.out,
      '--tokens',
      w.tokens,
      '--json',
      '--quiet',
      '--no-report-update',
      '--backend',
      'wasm',
    ],
    { encoding: 'utf8' },
  );
  assert.equal(cli.status, 0, cli.stderr);
  const expected = JSON.parse(cli.stdout);
  const reportFile = path.join(w.out, 'loftq-report.json');
  await withServer(w.root, async (c) => {
    const base: EvalParams = { original: w.ckptDir, out: w.out, tokens: w.tokens, backend: 'wasm' };

    // Cancel a long one; meanwhile the server answers another request.
    const before = fs.readFileSync(reportFile);
    const cts = new CancellationTokenSource();
    const long = c.conn.sendRequest(Methods.eval, { ...base, tokens: w.many, workDoneToken: 'long' }, cts.token);
    let settled = false;
    long.then(
      () => {
        settled = true;
      },
      () => {
        settled = true;
      },
    );
    const longReport = () => c.progress.find((p) => p.token === 'long' && p.value.kind === 'report');
    await c.until(longReport, 'progress of the long run');
    const inspected = (await c.conn.sendRequest(Methods.inspect, { checkpoint: w.ckptDir })) as { tensors: unknown[] };
    assert.equal(inspected.tensors.length, 47);
    assert.ok(!settled, 'inspect was answered while the evaluation ran');
    await assert.rejects(c.conn.sendRequest(Methods.eval, base), /already running/);
    cts.cancel();
    await assert.rejects(long, (e: { code: number }) => e.code === -32800);
    assert.ok(fs.readFileSync(reportFile).equals(before), 'a cancelled evaluation leaves the report alone');
    assert.ok(!fs.existsSync(path.join(w.out, '.loftq.lock')), 'and releases the lock');

    const r = (await c.conn.sendRequest(Methods.eval, { ...base, workDoneToken: 'full' })) as EvalResult;
    assert.deepEqual(r.model, expected, 'the same figures as `loftq eval --json`');
    assert.equal(r.reportPath, reportFile);
    assert.deepEqual(JSON.parse(fs.readFileSync(reportFile, 'utf8')).model, expected);
    const reports = c.progress.filter((p) => p.token === 'full' && p.value.kind === 'report');
    const messages = reports.map((p) => p.value.message);
    for (const pass of ['original', 'loftq', 'qlora']) {
      assert.ok(messages.includes(`${pass} 5/5 layers`), messages.join('; '));
    }

    const bad = path.join(w.root, 'bad.json');
    fs.writeFileSync(bad, '[[1, 2, 9999]]');
    await assert.rejects(
      c.conn.sendRequest(Methods.eval, { ...base, tokens: bad }),
      (e: { code: number; message: string }) =>
        e.code === -32602 && /bad\.json: sequence 0, position 2: token id 9999/.test(e.message),
    );
    const elsewhere = path.join(tempDir(), 'tokens.json');
    fs.copyFileSync(w.tokens, elsewhere);
    await assert.rejects(
      c.conn.sendRequest(Methods.eval, { ...base, tokens: elsewhere }),
      (e: { code: number; data?: { outsideWorkspace?: string } }) =>
        e.code === -32602 && e.data?.outsideWorkspace === elsewhere,
    );
  });
});

test('loftq/eval without tokens: held-out tokens sampled from the original, seed after the calibration', async () => {
  const w = await evalWorkspace();
  await withServer(w.root, async (c) => {
    const r = (await c.conn.sendRequest(Methods.eval, {
      original: w.ckptDir,
      out: w.out,
      generate: { sequences: 2, length: 16 },
      backend: 'wasm',
      workDoneToken: 'held',
    })) as EvalResult;
    // The run sampled nothing for calibration: the held-out sampler takes seed 1 (calibration's default is 0).
    assert.deepEqual(r.model.generated, { sequences: 2, length: 16, seed: 1 });
    assert.equal(r.model.tokens, 32);
    const messages = c.progress
      .filter((p) => p.token === 'held' && p.value.kind === 'report')
      .map((p) => p.value.message);
    assert.ok(
      messages.some((m) => /^sampling held-out tokens \d+\/\d+$/.test(m)),
      messages.join('; '),
    );
    assert.ok(messages.includes('qlora 5/5 layers'), messages.join('; '));
    await assert.rejects(
      c.conn.sendRequest(Methods.eval, { original: w.ckptDir, out: w.out, generate: { sequences: 0, length: 16 } }),
      (e: { code: number; message: string }) =>
        e.code === -32602 && /'generate\.sequences' must be an integer ≥ 1/.test(e.message),
    );
    await assert.rejects(
      c.conn.sendRequest(Methods.eval, {
        original: w.ckptDir,
        out: w.out,
        tokens: w.tokens,
        generate: { sequences: 2, length: 8 },
      }),
      /not both/,
    );
  });
});
