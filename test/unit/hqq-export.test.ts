// `--format hqq` (issue 24): the written modules are HQQLinear's serialized state (checked
// against real hqq 0.2.8's files in test/fixtures/hqq), each at the bits its plan gives it; what
// we read back from them (and from transformers' own save_pretrained output) is what HQQLinear
// dequantizes; the report's errors are those of the written files; sizes are the files' sizes.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fixture, repoRoot, tempDir } from '../helpers';
import {
  openCheckpoint,
  readTensorBytes,
  readTensorF32,
  SafetensorsWriter,
  type Checkpoint,
  type TensorSpec,
} from '../../server/src/checkpoint';
import { readHqqModule } from '../../server/src/quant/hqqModule';
import { parseModelConfig } from '../../server/src/model/config';
import { runForward } from '../../server/src/model/forward';
import { createBackend } from '../../server/src/linalg/backend';
import type { Report } from '../../server/src/protocol/lsp_ext';

const CLI = path.join(repoRoot, 'dist', 'cli.js');
const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

function ok(r: ReturnType<typeof run>) {
  assert.equal(r.status, 0, `exit code (stderr: ${r.stderr})`);
}

function refused(r: ReturnType<typeof run>, pattern: RegExp) {
  assert.equal(r.status, 2, `exit code (stderr: ${r.stderr})`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line, got: ${r.stderr}`);
  assert.match(lines[0], pattern);
}

const report = (dir: string): Report => JSON.parse(fs.readFileSync(path.join(dir, 'loftq-report.json'), 'utf8'));

async function bytesOf(ck: Checkpoint, name: string): Promise<Uint8Array> {
  const t = ck.byName.get(name);
  assert.ok(t, `${ck.path} has ${name}`);
  return readTensorBytes(t);
}

const PLAN = {
  checkpoint: STORIES,
  defaults: { quantizer: 'hqq', bits: 2, rank: 8, iters: 3, blockSize: 64 },
  overrides: [
    { match: 'q_proj', bits: 1 },
    { match: 'model.layers.1.mlp.*', bits: 3 },
    { match: 'o_proj', bits: 8 },
    { match: 'model.layers.0.mlp.down_proj', bits: 4 },
  ],
};
const bitsOf = (name: string) =>
  name.includes('q_proj')
    ? 1
    : name.includes('layers.1.mlp.')
      ? 3
      : name.includes('o_proj')
        ? 8
        : name.includes('layers.0.mlp.down_proj')
          ? 4
          : 2;

test('--format hqq: each module at its planned bits as HQQLinear state; report errors are the files’', async () => {
  const dir = tempDir('loftq-hqq-');
  try {
    const planFile = path.join(dir, 'loftq.json');
    fs.writeFileSync(planFile, JSON.stringify(PLAN));
    const out = path.join(dir, 'out');
    ok(run('quantize', STORIES, '--out', out, '--plan', planFile, '--format', 'hqq', '--quiet'));
    const r = report(out);
    const backbone = await openCheckpoint(path.join(out, 'model.safetensors'));
    const original = await openCheckpoint(path.join(STORIES, 'model.safetensors'));
    const adapters = await openCheckpoint(path.join(out, 'loftq_init', 'adapter_model.safetensors'));
    const fixtureModule = await openCheckpoint(
      fixture('hqq', 'hqqlinear-module-synth128x96-b3-g64-float32.safetensors'),
    );
    const fixtureKeys = fixtureModule.tensors.map((t) => t.name.slice('model.layers.0.mlp.up_proj.'.length));
    assert.equal(r.matrices.length, 35);
    let quantizedBytes = 0;
    for (const m of r.matrices) {
      const mod = m.name.replace(/\.weight$/, '');
      assert.equal(backbone.byName.has(m.name), false, `${m.name} is not stored dense`);
      const keys = backbone.tensors
        .filter((t) => t.name.startsWith(`${mod}.`))
        .map((t) => t.name.slice(mod.length + 1));
      // hqq's 19 keys (the fixture's 20 less its bias: Llama's projections have none).
      assert.deepEqual(keys.sort(), fixtureKeys.filter((k) => k !== 'bias').sort(), mod);
      for (const k of keys) quantizedBytes += backbone.byName.get(`${mod}.${k}`)!.byteLength;
      assert.equal(m.bits, bitsOf(m.name), m.name);
      const h = await readHqqModule(backbone, mod);
      assert.equal(h.bits, m.bits);
      assert.equal(h.groupSize, 64);
      assert.equal(h.computeDtype, 'float32');
      assert.deepEqual([h.rows, h.cols], m.shape);
      // LoftQ identity on the written files: ‖W − Q − B·A‖/‖W‖ (lora_alpha = r: scale 1).
      const w = await readTensorF32(original.byName.get(m.name)!);
      const a = await readTensorF32(adapters.byName.get(`base_model.model.${mod}.lora_A.weight`)!);
      const b = await readTensorF32(adapters.byName.get(`base_model.model.${mod}.lora_B.weight`)!);
      const [rows, cols] = m.shape;
      let err = 0,
        norm = 0;
      for (let i = 0; i < rows; i++)
        for (let j = 0; j < cols; j++) {
          let ba = 0;
          for (let k = 0; k < m.rank; k++) ba += b[i * m.rank + k] * a[k * cols + j];
          const e = w[i * cols + j] - h.values[i * cols + j] - ba;
          err += e * e;
          norm += w[i * cols + j] ** 2;
        }
      const rel = Math.sqrt(err / norm);
      assert.ok(Math.abs(rel - m.relError) <= 1e-5 * m.relError, `${m.name}: files ${rel}, report ${m.relError}`);
      assert.ok(m.relError < m.qloraRelError, `${m.name}: LoftQ below QLoRA`);
      assert.equal(m.nf4ReloadRelError, undefined, 'no bitsandbytes reload to report for HQQ');
    }
    // The bits HQQ stores are the bits the report counts: quantized modules' bytes exactly.
    const others = original.tensors.filter((t) => !r.matrices.some((m) => m.name === t.name));
    const otherBytes = others.reduce((s, t) => s + t.byteLength, 0);
    assert.equal(r.totals.backboneBytes, quantizedBytes + otherBytes);
    for (const t of others) assert.deepEqual(await bytesOf(backbone, t.name), await bytesOf(original, t.name), t.name);
    const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    assert.equal(config.quantization_config.quant_method, 'hqq');
    assert.deepEqual(config.quantization_config.skip_modules, ['lm_head']);
    assert.deepEqual(Object.keys(config.quantization_config.quant_config).sort(), [
      'mlp.down_proj',
      'mlp.gate_proj',
      'mlp.up_proj',
      'self_attn.k_proj',
      'self_attn.o_proj',
      'self_attn.q_proj',
      'self_attn.v_proj',
    ]);
    assert.equal(config.quantization_config.quant_config['self_attn.q_proj'].weight_quant_params.nbits, 1);
    assert.equal(config.model_type, 'llama', 'the input config is kept');
    assert.ok(fs.readFileSync(path.join(out, 'loftq_hqq.py'), 'utf8').includes('def load_model('));
    const adapterConfig = JSON.parse(fs.readFileSync(path.join(out, 'loftq_init', 'adapter_config.json'), 'utf8'));
    // One regex over full module names that PEFT fullmatches: every quantized module, nothing else.
    const wrapped = (await openCheckpoint(STORIES)).tensors
      .map((t) => t.name.replace(/\.weight$/, ''))
      .filter((m) => new RegExp(`^(?:${adapterConfig.target_modules})$`).test(m));
    assert.deepEqual(wrapped.sort(), r.matrices.map((m) => m.name.replace(/\.weight$/, '')).sort());
    assert.deepEqual([...new Set(wrapped.map((m) => m.split('.').pop()))].sort(), [
      'down_proj',
      'gate_proj',
      'k_proj',
      'o_proj',
      'q_proj',
      'up_proj',
      'v_proj',
    ]);
    // loftq eval reads the HQQ folder: the same model as the dense (peft) export of the same run.
    const dense = path.join(dir, 'dense');
    ok(run('quantize', STORIES, '--out', dense, '--plan', planFile, '--format', 'peft', '--quiet'));
    const tokens = fixture('stories260k-tokens.json');
    const ev = (o: string) => JSON.parse(run('eval', STORIES, o, '--tokens', tokens, '--json', '--quiet').stdout);
    const [eh, ed] = [ev(out), ev(dense)];
    assert.equal(eh.loftq.kl, ed.loftq.kl);
    assert.equal(eh.qlora.kl, ed.qlora.kl);
    assert.ok(eh.loftq.kl > 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** A one-module checkpoint holding the fixture's W (and a bias), named as the fixture module is. */
async function moduleCheckpoint(dir: string, dtype: 'F32' | 'BF16'): Promise<string> {
  const w = await readTensorF32((await openCheckpoint(fixture('hqq', 'W-synth128x96.safetensors'))).byName.get('W')!);
  const mod = await openCheckpoint(fixture('hqq', 'hqqlinear-module-synth128x96-b3-g64-float32.safetensors'));
  const bias = await readTensorF32(mod.byName.get('model.layers.0.mlp.up_proj.bias')!);
  const { fromFloat32 } = await import('../../server/src/checkpoint');
  const specs: TensorSpec[] = [
    { name: 'model.layers.0.mlp.up_proj.weight', dtype, shape: [128, 96] },
    { name: 'model.layers.0.mlp.up_proj.bias', dtype, shape: [128] },
  ];
  const file = path.join(dir, 'model.safetensors');
  const writer = await SafetensorsWriter.create(file, specs, { format: 'pt' });
  await writer.write(specs[0].name, fromFloat32(dtype, w));
  await writer.write(specs[1].name, fromFloat32(dtype, bias));
  await writer.commit();
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', torch_dtype: 'float32' }));
  return dir;
}

test('one module, T = 1 (Q = HQQ(W)): the same 20 tensors as hqq 0.2.8’s HQQLinear state dict', async () => {
  const dir = tempDir('loftq-hqq-module-');
  try {
    for (const [dtype, file] of [
      ['F32', 'hqqlinear-module-synth128x96-b3-g64-float32.safetensors'],
      ['BF16', 'hqqlinear-module-synth128x96-b3-g64-bfloat16.safetensors'],
    ] as const) {
      const ckDir = await moduleCheckpoint(fs.mkdtempSync(path.join(dir, 'ck-')), dtype);
      const out = path.join(dir, `out-${dtype}`);
      ok(
        run(
          'quantize',
          ckDir,
          '--out',
          out,
          '--quantizer',
          'hqq',
          '--bits',
          '3',
          '--iters',
          '1',
          '--rank',
          '1',
          '--target',
          'up_proj',
          '--format',
          'hqq',
          '--quiet',
        ),
      );
      const ours = await openCheckpoint(path.join(out, 'model.safetensors'));
      const theirs = await openCheckpoint(fixture('hqq', file));
      assert.deepEqual(ours.tensors.map((t) => t.name).sort(), theirs.tensors.map((t) => t.name).sort());
      for (const t of theirs.tensors) {
        const o = ours.byName.get(t.name)!;
        assert.equal(o.dtype, t.dtype, `${dtype} ${t.name} dtype`);
        assert.deepEqual(o.shape, t.shape, `${dtype} ${t.name} shape`);
        const key = t.name.split('.').at(-1)!;
        // The BF16 checkpoint holds W rounded to bf16, so its codes (and scale/zero) are of
        // another matrix than the fixture's float32 W; its meta and bias are still the same.
        if (dtype === 'BF16' && ['W_q', 'scale', 'zero'].includes(key)) continue;
        // Byte for byte, the optimizer's zero included (it sums in torch's float32 order).
        assert.deepEqual(await readTensorBytes(o), await readTensorBytes(t), `${dtype} ${t.name} bytes`);
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('transformers’ own HQQ save_pretrained output reads back at its bits and gives its logits', async () => {
  const dynamic: Record<string, number> = {
    q_proj: 1,
    k_proj: 3,
    v_proj: 2,
    o_proj: 8,
    gate_proj: 3,
    up_proj: 2,
    down_proj: 4,
  };
  const original = await openCheckpoint(fixture('real', 'stories260k', 'model.safetensors'));
  for (const variant of ['float32', 'bfloat16']) {
    const ck = await openCheckpoint(fixture('hqq', `stories260k-hqq-${variant}`, 'model.safetensors'));
    let modules = 0;
    const values = new Map<string, Float32Array>();
    for (const t of original.tensors) {
      const m = /^(model\.layers\.\d+\.(?:self_attn|mlp)\.(\w+))\.weight$/.exec(t.name);
      if (!m) continue;
      const h = await readHqqModule(ck, m[1]);
      assert.equal(h.bits, dynamic[m[2]], t.name);
      assert.deepEqual([h.rows, h.cols], t.shape);
      assert.equal(h.computeDtype, 'float32', 'transformers 4.57 never passes its dtype to HQQ');
      values.set(t.name, h.values);
      modules++;
    }
    assert.equal(modules, 35);
    if (variant !== 'float32') continue;
    // The float32 model with these weights: transformers' logits (float32 forward, 1e-4).
    const ref = await openCheckpoint(fixture('hqq', 'stories260k-hqq-float32', 'reference-logits.safetensors'));
    const ids = await readTensorBytes(ref.byName.get('input_ids')!);
    const tokens = Array.from(
      new BigInt64Array(ids.buffer.slice(ids.byteOffset, ids.byteOffset + ids.byteLength)),
      Number,
    );
    const logits = await readTensorF32(ref.byName.get('logits')!);
    const config = parseModelConfig(
      'config.json',
      JSON.parse(fs.readFileSync(fixture('real', 'stories260k', 'config.json'), 'utf8')),
    );
    const backend = await createBackend('wasm');
    let max = 0;
    await runForward(original, config, [tokens], {
      backend,
      hooks: { weight: (name) => values.get(name) },
      onLogits: (_k, ours) => {
        for (let i = 0; i < ours.length; i++) max = Math.max(max, Math.abs(ours[i] - logits[i]));
      },
    });
    assert.ok(max < 1e-4, `max |Δlogit| ${max}`);
  }
});

test('--format hqq refuses, in one line and before writing, what HQQ cannot load', async () => {
  const dir = tempDir('loftq-hqq-bad-');
  try {
    const out = path.join(dir, 'out');
    refused(
      run('quantize', STORIES, '--out', out, '--format', 'hqq'),
      /--format hqq stores only quantizer hqq results, not nf/,
    );
    // 1 bit: stories260K's MLP matrices (64×172) have 172 groups of 64, not a multiple of 8.
    refused(
      run('quantize', STORIES, '--out', out, '--format', 'hqq', '--quantizer', 'hqq', '--bits', '1'),
      /layers\.0\.mlp\.(gate|up|down)_proj\.weight .*1-bit HQQ packs 8 groups per byte row.*group sizes that fit/,
    );
    refused(
      run('quantize', STORIES, '--out', out, '--quantizer', 'hqq', '--block-size', '12'),
      /block size must be a multiple of 8 with quantizer hqq, got 12/,
    );
    // GPT-2's Conv1D weights are stored [in, out]: transformers' HQQ replaces only nn.Linear.
    const gpt2 = path.join(dir, 'gpt2');
    fs.mkdirSync(gpt2);
    fs.writeFileSync(path.join(gpt2, 'config.json'), JSON.stringify({ model_type: 'gpt2' }));
    const w = await SafetensorsWriter.create(path.join(gpt2, 'model.safetensors'), [
      { name: 'transformer.h.0.attn.c_attn.weight', dtype: 'F32', shape: [64, 192] },
    ]);
    await w.write('transformer.h.0.attn.c_attn.weight', new Uint8Array(4 * 64 * 192));
    await w.commit();
    refused(
      run('quantize', gpt2, '--out', out, '--quantizer', 'hqq'),
      /--format hqq: transformer\.h\.0\.attn\.c_attn\.weight is a Conv1D weight stored \[in, out\]/,
    );
    refused(
      run('quantize', STORIES, '--out', out, '--format', 'packed', '--quantizer', 'hqq'),
      /--format packed stores only/,
    );
    assert.equal(fs.existsSync(out), false, 'nothing written');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--format hqq, sharded input: each module whole in its weight’s shard (bias moved there)', async () => {
  const dir = tempDir('loftq-hqq-sharded-');
  try {
    const src = await openCheckpoint(path.join(STORIES, 'model.safetensors'));
    const ck = path.join(dir, 'ck');
    fs.mkdirSync(ck);
    fs.copyFileSync(path.join(STORIES, 'config.json'), path.join(ck, 'config.json'));
    // Two shards; q_proj of layer 0 gets a bias, written in the *other* shard than its weight.
    const half = Math.ceil(src.tensors.length / 2);
    const parts = [src.tensors.slice(0, half), src.tensors.slice(half)];
    const biasName = 'model.layers.0.self_attn.q_proj.bias';
    assert.ok(parts[0].some((t) => t.name === 'model.layers.0.self_attn.q_proj.weight'));
    const weightMap: Record<string, string> = {};
    for (const [i, part] of parts.entries()) {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      const specs: TensorSpec[] = part.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape }));
      if (i === 1) specs.push({ name: biasName, dtype: 'F32', shape: [64] });
      const w = await SafetensorsWriter.create(path.join(ck, file), specs, { format: 'pt' });
      for (const t of part) await w.write(t.name, await readTensorBytes(t));
      if (i === 1) await w.write(biasName, new Uint8Array(Float32Array.from({ length: 64 }, (_, k) => k / 64).buffer));
      await w.commit();
      for (const s of specs) weightMap[s.name] = file;
    }
    fs.writeFileSync(
      path.join(ck, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }),
    );
    const out = path.join(dir, 'out');
    ok(
      run('quantize', ck, '--out', out, '--quantizer', 'hqq', '--bits', '4', '--rank', '4', '--iters', '2', '--quiet'),
    );
    const index = JSON.parse(fs.readFileSync(path.join(out, 'model.safetensors.index.json'), 'utf8'));
    const r = report(out);
    for (const m of r.matrices) {
      const mod = m.name.replace(/\.weight$/, '');
      const shards = new Set(
        Object.entries(index.weight_map)
          .filter(([k]) => k.startsWith(`${mod}.`))
          .map(([, f]) => f),
      );
      assert.equal(shards.size, 1, `${mod} in one shard`);
      assert.equal([...shards][0], weightMap[m.name], `${mod} stays in its weight's shard`);
    }
    assert.equal(index.weight_map[biasName], weightMap['model.layers.0.self_attn.q_proj.weight'], 'the bias moved');
    const backbone = await openCheckpoint(path.join(out, 'model.safetensors.index.json'));
    assert.deepEqual(
      new Set(backbone.tensors.map((t) => t.name)),
      new Set(Object.keys(index.weight_map)),
      'the index lists exactly the written tensors',
    );
    assert.deepEqual(
      await readTensorBytes(backbone.byName.get(biasName)!),
      new Uint8Array(Float32Array.from({ length: 64 }, (_, k) => k / 64).buffer),
    );
    const h = await readHqqModule(backbone, 'model.layers.0.self_attn.q_proj');
    assert.equal(h.bits, 4);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a plan’s predicted backbone bytes are the exported HQQ modules’ bytes', async () => {
  const dir = tempDir('loftq-hqq-plan-');
  try {
    const reportFile = path.join(dir, 'analysis.json');
    ok(
      run(
        'analyze',
        STORIES,
        '--quantizer',
        'hqq',
        '--bits',
        '1,2,3,4',
        '--rank',
        '8',
        '--iters',
        '1',
        '--report',
        reportFile,
      ),
    );
    const planFile = path.join(dir, 'loftq.json');
    const planned = run('plan', reportFile, '--budget', '3.2', '--out', planFile, '--json');
    ok(planned);
    const predicted = JSON.parse(planned.stdout).plan.bytes;
    const plan = JSON.parse(fs.readFileSync(planFile, 'utf8'));
    assert.equal(plan.format, 'hqq');
    const out = path.join(dir, 'out');
    ok(run('quantize', '--plan', planFile, '--out', out, '--quiet'));
    const backbone = await openCheckpoint(path.join(out, 'model.safetensors'));
    const mods = report(out).matrices.map((m) => m.name.replace(/\.weight$/, '.'));
    const written = backbone.tensors
      .filter((t) => mods.some((m) => t.name.startsWith(m)))
      .reduce((s, t) => s + t.byteLength, 0);
    assert.equal(predicted, written);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a module the plan skips stays dense, and skip_modules names it for transformers 4.57', async () => {
  const dir = tempDir('loftq-hqq-skip-');
  try {
    const planFile = path.join(dir, 'loftq.json');
    fs.writeFileSync(
      planFile,
      JSON.stringify({
        checkpoint: STORIES,
        defaults: { quantizer: 'hqq', bits: 3, rank: 2, iters: 1 },
        overrides: [{ match: 'model.layers.2.self_attn.o_proj', skip: true }],
      }),
    );
    const out = path.join(dir, 'out');
    ok(run('quantize', '--plan', planFile, '--out', out, '--quiet'));
    const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    assert.deepEqual(config.quantization_config.skip_modules, ['lm_head', 'model.layers.2.self_attn.o_proj']);
    const backbone = await openCheckpoint(path.join(out, 'model.safetensors'));
    const original = await openCheckpoint(path.join(STORIES, 'model.safetensors'));
    const name = 'model.layers.2.self_attn.o_proj.weight';
    assert.deepEqual(await bytesOf(backbone, name), await bytesOf(original, name));
    assert.equal(backbone.byName.has('model.layers.2.self_attn.o_proj.W_q'), false);
    assert.equal(report(out).matrices.length, 34);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('config.json keeps the input’s bytes (0.0 stays 0.0 for 5.x’s typed configs), plus quantization_config', () => {
  const dir = tempDir('loftq-hqq-config-');
  try {
    const phi3 = fixture('arch', 'phi3');
    const out = path.join(dir, 'out');
    ok(
      run(
        'quantize',
        phi3,
        '--out',
        out,
        '--quantizer',
        'hqq',
        '--bits',
        '4',
        '--rank',
        '2',
        '--iters',
        '1',
        '--quiet',
      ),
    );
    const input = fs.readFileSync(path.join(phi3, 'config.json'), 'utf8');
    const written = fs.readFileSync(path.join(out, 'config.json'), 'utf8');
    assert.match(input, /"resid_pdrop": 0\.0/);
    const body = input.trimEnd().replace(/\s*\}$/, '');
    assert.ok(written.startsWith(body), 'the input text, unchanged, then the new key');
    assert.equal(JSON.parse(written).quantization_config.quant_method, 'hqq');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
