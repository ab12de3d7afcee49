// Issue 14.7 over the real language server: a block size of 2^31 (which the kernels cannot
// address) is an error diagnostic on the plan file and an InvalidParams answer to
// loftq/quantize — both from the registry's ranges — instead of "memory access out of bounds".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DiagnosticSeverity } from 'vscode-languageserver-protocol';
import { Methods } from '../../server/src/protocol/lsp_ext';
import type { QuantizeParams } from '../../server/src/protocol/lsp_ext';
import { uriOf } from './lspClient';
import { withServer, workspace } from './support';

const HUGE_BLOCK = 2 ** 31;

test('out-of-range block size, rank, iters and workers: plan diagnostics and a refused loftq/quantize', async () => {
  const { root, ckptDir } = workspace();
  const file = path.join(root, 'loftq.json');
  const text = JSON.stringify({
    checkpoint: 'ckpt/model.safetensors',
    defaults: { blockSize: HUGE_BLOCK },
    overrides: [{ match: '**.q_proj', rank: 100000, iters: 5000 }],
  });
  fs.writeFileSync(file, text);
  const uri = uriOf(file);
  await withServer(root, async (c) => {
    const ds = await c.diagnosticsFor(uri, (d) => d.some((x) => x.message.startsWith("'blockSize'")));
    const errors = ds
      .filter((d) => d.severity === DiagnosticSeverity.Error)
      .map((d) => d.message)
      .sort();
    assert.deepEqual(errors, [
      `'blockSize' must be an integer ≤ 1073741824 (got ${HUGE_BLOCK})`,
      "'iters' must be an integer ≤ 1000 (got 5000)",
      "'rank' must be an integer ≤ 65536 (got 100000)",
      'rank 100000 is larger than min(out, in) = 64 of q_proj of layers 0–4 (5 matrices)',
    ]);
    const out = path.join(root, 'out');
    const settings = { bits: 2, rank: 2, iters: 1, quantizer: 'nf' as const, blockSize: HUGE_BLOCK };
    const checkpoint = path.join(ckptDir, 'model.safetensors');
    const params: QuantizeParams = { checkpoint, out, settings, backend: 'cpu', workers: 1 };
    const refused = (e: Error & { code: number }) =>
      e.code === -32602 && /'blockSize' must be an integer ≤ 1073741824/.test(e.message);
    await assert.rejects(c.conn.sendRequest(Methods.quantize, params), refused);
    assert.equal(fs.existsSync(out), false, 'nothing written');

    // A worker count is a count: the engine's 'in-thread' (or a negative count) would put LoftQ on the
    // connection's thread.
    for (const workers of ['in-thread', -1, 2.5]) {
      const p = { ...params, settings: { ...settings, blockSize: 64 }, workers } as unknown as QuantizeParams;
      await assert.rejects(
        c.conn.sendRequest(Methods.quantize, p),
        (e: Error & { code: number }) => e.code === -32602 && /^'workers' must be an integer ≥ 0$/.test(e.message),
      );
      assert.equal(fs.existsSync(out), false, 'nothing written');
    }
  });
});
