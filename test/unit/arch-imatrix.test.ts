// llama.cpp importance matrices on the families whose names differ from Llama's: Phi-3's fused
// blk.N.attn_qkv / ffn_up are its qkv_proj / gate_up_proj, Phi-2's attn_output / ffn_up /
// ffn_down its dense / fc1 / fc2 (and a fused attn_qkv its q/k/v); widths are checked against
// the family's matrices.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readModelConfig } from '../../server/src/model/config';
import { readImatrix } from '../../server/src/model/imatrix';
import { writeGgufImatrix } from '../calib-files';
import { fixture, tempDir } from '../helpers';

const ramp = (n: number, k: number) => Array.from({ length: n }, (_, i) => 0.5 + ((i * 5 + k) % 11) / 4);

test('imatrix names map to each family’s own tensor names (Phi-3 fused, Phi-2 dense/fc1/fc2)', async () => {
  const tmp = tempDir('loftq-arch-imatrix-');
  try {
    const cases: [string, [string, number, string][]][] = [
      [
        'phi3',
        [
          ['blk.0.attn_qkv.weight', 64, 'model.layers.0.self_attn.qkv_proj.weight'],
          ['blk.1.ffn_up.weight', 64, 'model.layers.1.mlp.gate_up_proj.weight'],
          ['blk.1.ffn_down.weight', 128, 'model.layers.1.mlp.down_proj.weight'],
          ['blk.0.attn_output.weight', 64, 'model.layers.0.self_attn.o_proj.weight'],
        ],
      ],
      [
        'phi',
        [
          ['blk.0.attn_q.weight', 64, 'model.layers.0.self_attn.q_proj.weight'],
          ['blk.0.attn_output.weight', 64, 'model.layers.0.self_attn.dense.weight'],
          ['blk.1.attn_qkv.weight', 64, 'model.layers.1.self_attn.q_proj.weight'],
          ['blk.1.ffn_up.weight', 64, 'model.layers.1.mlp.fc1.weight'],
          ['blk.1.ffn_down.weight', 128, 'model.layers.1.mlp.fc2.weight'],
        ],
      ],
      [
        'gemma2',
        [
          ['blk.0.attn_q.weight', 64, 'model.layers.0.self_attn.q_proj.weight'],
          ['blk.0.attn_output.weight', 128, 'model.layers.0.self_attn.o_proj.weight'],
          ['blk.1.ffn_gate.weight', 64, 'model.layers.1.mlp.gate_proj.weight'],
        ],
      ],
    ];
    for (const [family, entries] of cases) {
      const file = path.join(tmp, `${family}.gguf`);
      writeGgufImatrix(
        file,
        entries.map(([name, width], k) => ({ name, mean: ramp(width, k), count: 100 })),
      );
      const stats = await readImatrix(file, await readModelConfig(fixture('arch', family)));
      // Phi-2's fused attn_qkv stands for q/k/v: one statistic for the three.
      const fused = family === 'phi' ? ['k_proj', 'v_proj'].map((n) => `model.layers.1.self_attn.${n}.weight`) : [];
      assert.deepEqual([...stats.keys()].sort(), [...entries.map((e) => e[2]), ...fused].sort(), family);
      for (const f of fused) assert.equal(stats.get(f), stats.get('model.layers.1.self_attn.q_proj.weight'));
      entries.forEach(([, width, hf], k) => {
        const s = stats.get(hf)!;
        assert.equal(s.kind, 'diag');
        assert.equal(s.dim, width);
        if (s.kind === 'diag') assert.ok(Math.abs(s.d[3] - ramp(width, k)[3]) < 1e-6, `${family} ${hf}`);
      });
    }
    // Phi-3's qkv_proj reads the 64-wide hidden state: a 128-wide entry is another model's.
    const wrong = path.join(tmp, 'wide.gguf');
    writeGgufImatrix(wrong, [{ name: 'blk.0.attn_qkv.weight', mean: ramp(128, 0), count: 10 }]);
    await assert.rejects(
      readImatrix(wrong, await readModelConfig(fixture('arch', 'phi3'))),
      /wide\.gguf: .*attn_qkv\.weight.* is 128 wide, but model\.layers\.0\.self_attn\.qkv_proj\.weight has 64/,
    );
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
