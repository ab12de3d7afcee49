// Protocol tier: QuantizeParams.calibration through the server — a calibrated run's report
// equals the CLI's for the same tokens; bad calibration input is refused naming the file, with
// nothing written; calibration files outside the workspace need the user's confirmation.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Methods } from '../../server/src/protocol/lsp_ext';
import type { QuantizeParams, QuantizeResult, Report } from '../../server/src/protocol/lsp_ext';
import { repoRoot, tempDir } from '../helpers';
import { withServer, workspace } from './support';

const SETTINGS = { bits: 4, rank: 4, iters: 2, quantizer: 'nf' as const, blockSize: 64 };
const IDS = [
  [1, 403, 407, 261, 378, 426, 275],
  [1, 43, 7, 99, 100, 12],
];

test('loftq/quantize with calibration: report as the CLI; bad input refused naming the file; confinement', async () => {
  const { root, ckptDir } = workspace();
  fs.copyFileSync(path.join(repoRoot, 'examples', 'stories260k', 'config.json'), path.join(ckptDir, 'config.json'));
  const ids = path.join(root, 'calib.json');
  fs.writeFileSync(ids, JSON.stringify(IDS));
  const checkpoint = path.join(ckptDir, 'model.safetensors');
  await withServer(root, async (c) => {
    const run = (p: Partial<QuantizeParams>) =>
      c.conn.sendRequest(Methods.quantize, {
        checkpoint,
        out: path.join(root, 'out'),
        settings: SETTINGS,
        backend: 'cpu',
        workers: 1,
        ...p,
      });
    const done = (await run({ calibration: { file: ids, ridge: 0.02 } })) as QuantizeResult;
    assert.deepEqual(done.report.calibration, {
      source: 'tokens',
      file: ids,
      sequences: 2,
      tokens: 13,
      fullStatMaxDim: 8192,
      ridge: 0.02,
      products: 'float32',
    });
    assert.ok(
      done.report.matrices.every((m) => m.outputRelError !== undefined && m.outputRelError < m.qloraOutputRelError!),
    );

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
        '4',
        '--rank',
        '4',
        '--iters',
        '2',
        '--backend',
        'cpu',
        '--calib',
        ids,
        '--calib-ridge',
        '0.02',
        '--quiet',
      ],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 0, r.stderr);
    const cli: Report = JSON.parse(fs.readFileSync(path.join(cliOut, 'loftq-report.json'), 'utf8'));
    assert.deepEqual(cli.calibration, done.report.calibration);
    const errs = (rep: Report) =>
      rep.matrices.map((m) => [m.name, m.outputRelError, m.qloraOutputRelError, m.bestIter]);
    assert.deepEqual(errs(cli), errs(done.report));

    // Bad input: a token outside the vocabulary; nothing written.
    const oov = path.join(root, 'oov.json');
    fs.writeFileSync(oov, JSON.stringify([[1, 2, 9999]]));
    const badOut = path.join(root, 'bad-out');
    await assert.rejects(
      run({ out: badOut, calibration: { file: oov } }),
      (e: Error & { code: number }) =>
        e.code === -32602 && e.message.includes(oov) && /token id 9999 is outside the vocabulary/.test(e.message),
    );
    assert.ok(!fs.existsSync(badOut), 'nothing written');
    await assert.rejects(
      run({ out: badOut, calibration: { file: ids, generate: { sequences: 2, length: 8 } } }),
      (e: Error & { code: number }) => e.code === -32602 && /exactly one source/.test(e.message),
    );
    await assert.rejects(
      run({ out: badOut, calibration: { ridge: 'big' } as never }),
      (e: Error & { code: number }) => e.code === -32602,
    );
    await assert.rejects(
      run({ out: badOut, calibration: { file: ids, products: 'fp16' } as never }),
      (e: Error & { code: number }) => e.code === -32602 && /products must be auto or float32/.test(e.message),
    );

    // A calibration file outside the workspace needs confirmation.
    const elsewhere = path.join(tempDir('loftq-elsewhere-'), 'imatrix.gguf');
    fs.writeFileSync(elsewhere, 'GGUF');
    await assert.rejects(
      run({ out: badOut, calibration: { imatrix: elsewhere } }),
      (e: Error & { code: number; data?: { outsideWorkspace?: string } }) =>
        e.code === -32602 && e.data?.outsideWorkspace === elsewhere,
    );

    // Generated calibration through the server.
    const gen = (await run({
      out: path.join(root, 'gen-out'),
      calibration: { generate: { sequences: 2, length: 16, seed: 3 } },
    })) as QuantizeResult;
    assert.deepEqual(gen.report.calibration, {
      source: 'generated',
      sequences: 2,
      tokens: 32,
      fullStatMaxDim: 8192,
      ridge: 0.01,
      seed: 3,
      products: 'float32',
    });
  });
});
