// Protocol tier: an HQQ plan (issue 24 §4, §5, §8) — the editor refuses what `--format hqq`
// refuses (at the node that decides it), counts HQQ's stored bytes in the budget, and offers
// only the widths HQQ's loader can pack.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CodeAction, CodeActionRequest } from 'vscode-languageserver-protocol';
import { uriOf } from './lspClient';
import { Methods } from '../../server/src/protocol/lsp_ext';
import type { QuantizeParams } from '../../server/src/protocol/lsp_ext';
import { rangeOf, withServer, workspace } from './support';
import { repoRoot } from '../helpers';

// stories260K: per layer q, o 64×64; k, v 32×64; gate, up 172×64; down 64×172 (F32).
const SHAPES: [string, number, number][] = [
  ['q_proj', 64, 64],
  ['k_proj', 32, 64],
  ['v_proj', 32, 64],
  ['o_proj', 64, 64],
  ['gate_proj', 172, 64],
  ['up_proj', 172, 64],
  ['down_proj', 64, 172],
];

/** HQQLinear's stored bytes at `bits`, group 64, float32 compute dtype: W_q (3 bits: int32
 *  words of ten codes over the groups padded to a multiple of 10), scale and zero per group,
 *  and its meta tensors (shape 16, three int32 scalars 12, "torch.float32" 13, packing 7,
 *  "torch.uint8"/"torch.int32" 11, nine flags 9 = 68 bytes). */
function hqqBytes(rows: number, cols: number, bits: number): number {
  const groups = (rows * cols) / 64;
  const codes = bits === 3 ? 4 * Math.ceil(groups / 10) * 64 : (groups * 64 * bits) / 8;
  return codes + groups * 2 * 4 + 68;
}

test('an HQQ plan: what HQQ cannot store is an error where it is set; the budget counts HQQ bytes', async () => {
  const { root } = workspace();
  const file = path.join(root, 'loftq.json');
  const text = `{
  "checkpoint": "ckpt/model.safetensors",
  "format": "hqq",
  "defaults": { "quantizer": "hqq", "bits": 2, "rank": 1 },
  "overrides": [
    { "match": "model.layers.*.mlp.down_proj", "bits": 1 },
    { "match": "model.layers.*.self_attn.q_proj", "quantizer": "nf", "bits": 4 }
  ],
  "budget": { "avgBits": 3 }
}`;
  fs.writeFileSync(file, text);
  const uri = uriOf(file);
  await withServer(root, async (c) => {
    await c.open(uri, text);
    const ds = await c.diagnosticsFor(uri, (d) => d.filter((x) => x.code === 'format').length === 2);
    const shape = ds.find((d) => d.code === 'format' && d.message.includes('down_proj'))!;
    const bitsOne = rangeOf(text, '"bits": 1');
    assert.deepEqual(shape.range, {
      start: { ...bitsOne.end, character: bitsOne.end.character - 1 },
      end: bitsOne.end,
    });
    assert.match(
      shape.message,
      /^down_proj of layers 0–4 \(5\): 1-bit HQQ packs 8 groups per byte row: 64×172 has 172 groups of 64/,
    );
    assert.match(shape.message, /bit widths that fit at group size 64: 2, 3, 4, 8$/);
    const foreign = ds.find((d) => d.code === 'format' && d.message.startsWith("format 'hqq'"))!;
    assert.equal(
      foreign.message,
      "format 'hqq' stores only quantizer hqq results, not nf: q_proj of layers 0–4 (5 matrices)",
    );
    assert.deepEqual(foreign.range, rangeOf(text, '"hqq"'));

    // The budget: HQQ's bytes for these settings (q_proj as NF4 with double-quantized scales).
    const budget = ds.find((d) => d.code === 'budget')!;
    let bytes = 0,
      weights = 0;
    for (const [name, rows, cols] of SHAPES) {
      const n = rows * cols;
      weights += 5 * n;
      if (name === 'q_proj') {
        const blocks = n / 64;
        bytes += 5 * (n / 2 + blocks + 4 * Math.ceil(blocks / 256) + 4);
      } else bytes += 5 * hqqBytes(rows, cols, name === 'down_proj' ? 1 : 2);
    }
    const bits = ((8 * bytes) / weights).toFixed(2);
    assert.match(budget.message, new RegExp(`^this plan's backbone costs ${bits.replace('.', '\\.')} bits per weight`));

    // On the down_proj override: the widths HQQ can pack for 64×172 (not 1, which is set).
    const actions = (await c.conn.sendRequest(CodeActionRequest.type, {
      textDocument: { uri },
      range: rangeOf(text, 'mlp.down_proj'),
      context: { diagnostics: [] },
    })) as CodeAction[];
    assert.deepEqual(
      actions.map((a) => a.title).filter((t) => t.startsWith('Quantize these')),
      [2, 3, 4, 8].map((b) => `Quantize these matrices at ${b} bits`),
    );
  });
});

test('loftq/quantize: an HQQ run writes HQQ unless told; an unknown format is InvalidParams', async () => {
  const { root, ckptDir } = workspace();
  fs.copyFileSync(path.join(repoRoot, 'examples', 'stories260k', 'config.json'), path.join(ckptDir, 'config.json'));
  await withServer(root, async (c) => {
    const checkpoint = path.join(ckptDir, 'model.safetensors');
    const settings = { bits: 3, rank: 2, iters: 1, quantizer: 'hqq' as const, blockSize: 64 };
    const params = (out: string, format?: string) =>
      ({ checkpoint, out: path.join(root, out), settings, backend: 'wasm', workers: 1, format }) as QuantizeParams;
    await c.conn.sendRequest(Methods.quantize, params('hqq'));
    const config = JSON.parse(fs.readFileSync(path.join(root, 'hqq', 'config.json'), 'utf8'));
    assert.equal(config.quantization_config.quant_method, 'hqq');
    assert.ok(fs.existsSync(path.join(root, 'hqq', 'loftq_hqq.py')));
    await c.conn.sendRequest(Methods.quantize, params('dense', 'peft'));
    assert.equal(fs.existsSync(path.join(root, 'dense', 'loftq_hqq.py')), false);
    await assert.rejects(
      c.conn.sendRequest(Methods.quantize, params('bad', 'gguf')),
      (e: { code: number; message: string }) =>
        e.code === -32602 && e.message === `'format' must be peft, packed or hqq, got "gguf"`,
    );
    await assert.rejects(
      c.conn.sendRequest(Methods.quantize, { ...params('bad', 'hqq'), settings: { ...settings, quantizer: 'nf' } }),
      /--format hqq stores only quantizer hqq results, not nf/,
    );
    assert.equal(fs.existsSync(path.join(root, 'bad')), false);
  });
});
