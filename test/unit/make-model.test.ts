// The checkpoint generator: the tiny preset opens as one sharded Llama checkpoint with the
// right names, shapes, dtypes and config, the bytes depend only on the seed (not on worker
// count), and the weights carry the LLM-like traits that make per-layer error differ.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { openCheckpoint, readTensorF32 } from '../../server/src/checkpoint';
import { makeModel, planShards } from '../../server/src/tools/make-model-lib';
import { codebook } from '../../server/src/quant/codebook';
import { quantize } from '../../server/src/quant/quantize';
import { repoRoot, tempDir } from '../helpers';
import { moments, singularValues } from './synth-stats';

/** file name → sha256 of its bytes */
const readAll = (dir: string) =>
  Object.fromEntries(
    fs
      .readdirSync(dir)
      .sort()
      .map((f) => [
        f,
        createHash('sha256')
          .update(new Uint8Array(fs.readFileSync(path.join(dir, f))))
          .digest('hex'),
      ]),
  );

test('tiny preset: one sharded checkpoint with Llama names, shapes, BF16, index and config', async () => {
  const out = tempDir();
  const r = await makeModel({ preset: 'tiny', out, seed: 1 });
  const ck = await openCheckpoint(out);
  assert.equal(ck.kind, 'sharded');
  assert.ok(ck.files.length >= 2, `${ck.files.length} shards`);
  assert.deepEqual(
    ck.files.map((f) => path.basename(f)),
    ck.files.map((_, i) => `model-0000${i + 1}-of-0000${ck.files.length}.safetensors`),
  );
  // 4 layers × (4 attention + 3 MLP + 2 norms) + embed + final norm + lm_head.
  assert.equal(ck.tensors.length, 4 * 9 + 3);
  assert.ok(ck.tensors.every((t) => t.dtype === 'BF16'));
  const shape = (n: string) => ck.byName.get(n)?.shape;
  assert.deepEqual(shape('model.embed_tokens.weight'), [512, 128]);
  assert.deepEqual(shape('lm_head.weight'), [512, 128]);
  assert.deepEqual(shape('model.norm.weight'), [128]);
  for (let l = 0; l < 4; l++) {
    const p = `model.layers.${l}`;
    assert.deepEqual(shape(`${p}.self_attn.q_proj.weight`), [128, 128]);
    assert.deepEqual(shape(`${p}.self_attn.k_proj.weight`), [64, 128]); // 2 KV heads × 32
    assert.deepEqual(shape(`${p}.self_attn.v_proj.weight`), [64, 128]);
    assert.deepEqual(shape(`${p}.self_attn.o_proj.weight`), [128, 128]);
    assert.deepEqual(shape(`${p}.mlp.gate_proj.weight`), [344, 128]);
    assert.deepEqual(shape(`${p}.mlp.up_proj.weight`), [344, 128]);
    assert.deepEqual(shape(`${p}.mlp.down_proj.weight`), [128, 344]);
    assert.deepEqual(shape(`${p}.input_layernorm.weight`), [128]);
    assert.deepEqual(shape(`${p}.post_attention_layernorm.weight`), [128]);
  }
  const params = ck.tensors.reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
  assert.equal(r.parameters, params);
  const index = JSON.parse(fs.readFileSync(path.join(out, 'model.safetensors.index.json'), 'utf8'));
  assert.equal(index.metadata.total_size, 2 * params);
  assert.equal(Object.keys(index.weight_map).length, ck.tensors.length);
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
  assert.deepEqual(cfg.architectures, ['LlamaForCausalLM']);
  assert.equal(cfg.model_type, 'llama');
  assert.deepEqual(
    [
      cfg.hidden_size,
      cfg.intermediate_size,
      cfg.num_hidden_layers,
      cfg.num_attention_heads,
      cfg.num_key_value_heads,
      cfg.vocab_size,
    ],
    [128, 344, 4, 4, 2, 512],
  );
  assert.equal(cfg.torch_dtype, 'bfloat16');
  assert.equal(cfg.tie_word_embeddings, false);
  assert.deepEqual(
    fs.readdirSync(out).filter((f) => f.endsWith('.tmp')),
    [],
  );
});

test('bytes depend only on the seed: same seed same files, other seed other files', async () => {
  const a = tempDir(),
    b = tempDir(),
    c = tempDir();
  await makeModel({ preset: 'tiny', out: a, seed: 5 });
  await makeModel({ preset: 'tiny', out: b, seed: 5 });
  await makeModel({ preset: 'tiny', out: c, seed: 6 });
  assert.deepEqual(readAll(a), readAll(b));
  const fa = readAll(a),
    fc = readAll(c);
  for (const f of Object.keys(fa).filter((f) => f.endsWith('.safetensors'))) assert.notEqual(fa[f], fc[f], f);
});

test('the CLI with worker threads writes the same bytes as one thread; --layers and --shard-size apply', async () => {
  const cli = path.join(repoRoot, 'dist', 'make-model.js');
  assert.ok(fs.existsSync(cli), 'dist/make-model.js is built by esbuild.mjs');
  const one = tempDir(),
    two = tempDir();
  await makeModel({ preset: 'tiny', out: one, seed: 2, layers: 2, shardSize: 200_000 });
  const r = spawnSync(
    process.execPath,
    [cli, '--preset', 'tiny', '--out', two, '--seed', '2', '--layers', '2', '--shard-size', '200KB', '--workers', '3'],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(readAll(one), readAll(two));
  const ck = await openCheckpoint(two);
  assert.equal(ck.tensors.length, 2 * 9 + 3);
  for (const f of ck.files) assert.ok(fs.statSync(f).size <= 200_000 + 8 + 4096, `${f} exceeds the shard size`);
});

test('the CLI rejects bad usage with one line and exit code 2', () => {
  const cli = path.join(repoRoot, 'dist', 'make-model.js');
  for (const args of [
    ['--preset', 'gpt-9', '--out', tempDir()],
    ['--preset', 'tiny'],
    ['--preset', 'tiny', '--out', tempDir(), '--shard-size', 'big'],
  ]) {
    const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
    assert.equal(r.status, 2, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /^make-model: /);
  }
});

test('planShards splits greedily in order and gives an oversized tensor a shard of its own', () => {
  const j = (name: string, n: number) => ({ name, shape: [n], kind: 'norm' as const });
  const shards = planShards([j('a', 40), j('b', 40), j('c', 40), j('d', 500), j('e', 10)], 200);
  assert.deepEqual(
    shards.map((s) => s.map((t) => t.name)),
    [['a', 'b'], ['c'], ['d'], ['e']],
  );
});

test('generated weights are LLM-like, and their quantization error differs by layer and module', async () => {
  const out = tempDir();
  await makeModel({ preset: 'tiny', out, seed: 3 });
  const ck = await openCheckpoint(out);
  const w = async (n: string) => readTensorF32(ck.byName.get(n)!);

  const down = moments(await w('model.layers.1.mlp.down_proj.weight'));
  assert.ok(down.kurtosis > 6, `down_proj kurtosis ${down.kurtosis} (Gaussian: 3)`);
  const q = singularValues(await w('model.layers.1.self_attn.q_proj.weight'), 128, 128);
  assert.ok(q[0] / q[15] > 2, `q_proj σ1/σ16 = ${q[0] / q[15]}`);
  for (let i = 0; i < 8; i++) assert.ok(q[i] > q[i + 1]);
  const norm = moments(await w('model.layers.0.input_layernorm.weight'));
  assert.ok(Math.abs(norm.mean - 1) < 0.05, `norm gain mean ${norm.mean}`);

  // NF2 QLoRA error ‖W − Q(W)‖/‖W‖ per linear weight: the traits must spread it.
  const table = codebook('nf', 2);
  const errs: number[] = [];
  for (const t of ck.tensors.filter((t) => t.shape.length === 2 && t.name.includes('layers.'))) {
    const x = await readTensorF32(t);
    const v = quantize(x, table, 'nf', 64).values;
    let num = 0,
      den = 0;
    for (let i = 0; i < x.length; i++) {
      num += (x[i] - v[i]) ** 2;
      den += x[i] ** 2;
    }
    errs.push(Math.sqrt(num / den));
  }
  assert.ok(Math.max(...errs) / Math.min(...errs) > 1.3, `NF2 errors ${Math.min(...errs)}..${Math.max(...errs)}`);
});
