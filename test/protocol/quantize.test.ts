// Protocol tier: `loftq/quantize` through the server — work-done progress, matrixDone and
// runState notifications, cancellation leaving no output, a refused second run into the
// same folder, and a completed run whose report matches the CLI's (same engine, same settings).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CancellationTokenSource } from 'vscode-languageserver-protocol';
import { Methods } from '../../server/src/protocol/lsp_ext';
import type { QuantizeParams, QuantizeResult, Report } from '../../server/src/protocol/lsp_ext';
import { repoRoot } from '../helpers';
import { withServer, workspace } from './support';

const SETTINGS = { bits: 2, rank: 8, iters: 2, quantizer: 'nf' as const, blockSize: 64 };

const listAll = (d: string): string[] => (fs.existsSync(d) ? fs.readdirSync(d, { recursive: true }).map(String) : []);

test('loftq/quantize: cancel midway leaves nothing; a full run reports progress and matches the CLI', async () => {
  const { root, ckptDir } = workspace();
  await withServer(root, async (c) => {
    const checkpoint = path.join(ckptDir, 'model.safetensors');
    const out = path.join(root, 'out');
    const params = (token: string): QuantizeParams => ({
      checkpoint,
      out,
      settings: SETTINGS,
      backend: 'cpu',
      workers: 1,
      workDoneToken: token,
    });

    // Cancel once the first matrix is under way.
    const cts = new CancellationTokenSource();
    const cancelled = c.conn.sendRequest(Methods.quantize, params('cancel-me'), cts.token);
    await c.until(
      () =>
        c.progress.find(
          (p) => p.token === 'cancel-me' && p.value.kind === 'report' && /^matrix \d+ of 35: /.test(p.value.message),
        ),
      'progress of the run to cancel',
    );
    // A second run into the same folder is refused while the first one runs.
    await assert.rejects(c.conn.sendRequest(Methods.quantize, params('second')), /already writing to/);
    cts.cancel();
    await assert.rejects(cancelled, (e: { code: number }) => e.code === -32800);
    assert.deepEqual(listAll(out), [], 'no partial output');
    await c.until(
      () => c.notifications.find((n) => n.method === Methods.runState && n.params.state === 'cancelled'),
      'runState cancelled',
    );

    // To completion.
    const done = (await c.conn.sendRequest(Methods.quantize, params('full'))) as QuantizeResult;
    const progress = c.progress.filter((p) => p.token === 'full');
    assert.equal(progress[0].value.kind, 'begin');
    assert.equal(progress[0].value.cancellable, true);
    assert.equal(progress[progress.length - 1].value.kind, 'end');
    const messages = progress.filter((p) => p.value.kind === 'report').map((p) => p.value.message as string);
    assert.ok(
      messages.some((m) => /^matrix 35 of 35: model\.layers\.4\.\S+/.test(m)),
      messages.join('\n'),
    );
    const matrixDone = c.notifications.filter((n) => n.method === Methods.matrixDone);
    const runIds = new Set(matrixDone.map((n) => n.params.runId));
    const fullRun = c.notifications.find((n) => n.method === Methods.runState && n.params.state === 'finished')!;
    const streamed = matrixDone.filter((n) => n.params.runId === fullRun.params.runId);
    assert.equal(streamed.length, 35);
    assert.ok(runIds.size >= 1);
    assert.equal(fullRun.params.reportPath, done.reportPath);

    const onDisk: Report = JSON.parse(fs.readFileSync(done.reportPath, 'utf8'));
    assert.deepEqual(done.report, onDisk);
    const byName = new Map(onDisk.matrices.map((m) => [m.name, m]));
    for (const n of streamed) assert.equal(n.params.matrix.relError, byName.get(n.params.matrix.name)!.relError);

    // The CLI with the same settings: the same engine gives the same numbers.
    const cliOut = path.join(root, 'cli-out');
    const r = spawnSync(
      process.execPath,
      [
        path.join(repoRoot, 'dist', 'cli.js'),
        'quantize',
        checkpoint,
        '--out',
        cliOut,
        '--bits',
        '2',
        '--rank',
        '8',
        '--iters',
        '2',
        '--backend',
        'cpu',
      ],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 0, r.stderr);
    const cli: Report = JSON.parse(fs.readFileSync(path.join(cliOut, 'loftq-report.json'), 'utf8'));
    assert.deepEqual(
      cli.matrices.map((m) => [m.name, m.relError, m.qloraRelError]),
      onDisk.matrices.map((m) => [m.name, m.relError, m.qloraRelError]),
    );
  });
});
