import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { quantizeCheckpoint, analyzeCheckpoint, REPORT_FILE } from '../../server/src/engine/run';
import { openCheckpoint, readTensorF32, readTensorBytes, TensorInfo } from '../../server/src/checkpoint';
import { codebook } from '../../server/src/quant/codebook';
import { unpackCodes } from '../../server/src/quant/pack';
import { dequantize } from '../../server/src/quant/quantize';
import { nearestCode } from '../quantReference';
import { CancelledError } from '../../server/src/base/errors';
import { JOURNAL_DIR } from '../../server/src/base/journal';
import { fixture, repoRoot, tempDir } from '../helpers';

const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const settings = { bits: 2, rank: 8, iters: 3, quantizer: 'nf' as const, blockSize: 64 };

function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const f of fs.readdirSync(d)) {
      const p = path.join(d, f);
      if (fs.statSync(p).isDirectory()) walk(p);
      else out.push(path.relative(dir, p));
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return out.sort();
}

/** Relative errors of the written files, recomputed from disk with plain loops:
 *  ‖W − Q − s·B·A‖, ‖W − Q‖ and ‖W − NF4(Q) − s·B·A‖ (bitsandbytes' load-time re-quantization,
 *  by the plain definition) over ‖W‖, and ‖W‖. */
async function diskErrors(t: TensorInfo, outT: TensorInfo, A: TensorInfo, B: TensorInfo, scale: number) {
  const [rows, cols] = t.shape;
  const r = A.shape[0];
  const w = await readTensorF32(t),
    q = await readTensorF32(outT),
    a = await readTensorF32(A),
    b = await readTensorF32(B);
  const nf4 = codebook('nf', 4);
  const reloaded = new Float32Array(q.length);
  for (let s0 = 0; s0 < q.length; s0 += 64) {
    const block = q.subarray(s0, s0 + 64);
    const absmax = Math.max(...Array.from(block, Math.abs));
    block.forEach((x, i) => {
      reloaded[s0 + i] = absmax === 0 ? 0 : Math.fround(nf4[nearestCode(nf4, Math.fround(x / absmax))] * absmax);
    });
  }
  let err = 0,
    norm = 0,
    qerr = 0,
    nf4err = 0;
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < cols; j++) {
      let ba = 0;
      for (let p = 0; p < r; p++) ba += b[i * r + p] * a[p * cols + j];
      const x = w[i * cols + j];
      err += (x - q[i * cols + j] - scale * ba) ** 2;
      nf4err += (x - reloaded[i * cols + j] - scale * ba) ** 2;
      qerr += (x - q[i * cols + j]) ** 2;
      norm += x * x;
    }
  return {
    err: Math.sqrt(err / norm),
    qerr: Math.sqrt(qerr / norm),
    nf4err: Math.sqrt(nf4err / norm),
    norm: Math.sqrt(norm),
  };
}

const EXPORT_REPRODUCES_ERRORS =
  'export: every input tensor present; ' + 'W ≈ Q + (α/r)·B·A re-read from disk reproduces the reported errors';

test(EXPORT_REPRODUCES_ERRORS, async () => {
  const out = tempDir();
  const { report, reportPath } = await quantizeCheckpoint(STORIES, { out, settings, workers: 2 });
  assert.deepEqual(JSON.parse(fs.readFileSync(reportPath, 'utf8')), JSON.parse(JSON.stringify(report)));
  assert.deepEqual(listFiles(out), [
    'config.json',
    REPORT_FILE,
    'loftq_init/adapter_config.json',
    'loftq_init/adapter_model.safetensors',
    'model.safetensors',
  ]);
  const input = await openCheckpoint(STORIES);
  const backbone = await openCheckpoint(path.join(out, 'model.safetensors'));
  const adapters = await openCheckpoint(path.join(out, 'loftq_init', 'adapter_model.safetensors'));
  const config = JSON.parse(fs.readFileSync(path.join(out, 'loftq_init', 'adapter_config.json'), 'utf8'));
  assert.equal(config.peft_type, 'LORA');
  assert.equal(config.r, 8);
  assert.equal(config.init_lora_weights, true);
  // The provenance lives in the report; PEFT ≥ 0.15 warns about loftq_config beside init_lora_weights.
  assert.equal(config.loftq_config, undefined);
  assert.deepEqual([...new Set(report.matrices.map((m) => `${m.bits}/${m.iters}`))], ['2/3']);
  // One regex over full module names (PEFT fullmatches it): every layer's seven linear layers.
  assert.equal(
    config.target_modules,
    'model\\.layers\\.(?:0|1|2|3|4)\\.(?:mlp\\.down_proj|mlp\\.gate_proj|mlp\\.up_proj|self_attn\\.k_proj|' +
      'self_attn\\.o_proj|self_attn\\.q_proj|self_attn\\.v_proj)',
  );
  const scale = config.lora_alpha / config.r;
  assert.deepEqual(
    backbone.tensors.map((t) => [t.name, t.dtype, t.shape]),
    input.tensors.map((t) => [t.name, t.dtype, t.shape]),
  );
  assert.equal(report.matrices.length, 35);
  for (const t of input.tensors) {
    const m = report.matrices.find((x) => x.name === t.name);
    const outT = backbone.byName.get(t.name)!;
    if (!m) {
      assert.deepEqual(await readTensorBytes(outT), await readTensorBytes(t), `${t.name} copied unchanged`);
      continue;
    }
    const mod = t.name.slice(0, -'.weight'.length);
    const A = adapters.byName.get(`base_model.model.${mod}.lora_A.weight`)!;
    const B = adapters.byName.get(`base_model.model.${mod}.lora_B.weight`)!;
    const [rows, cols] = t.shape;
    assert.deepEqual(A.shape, [8, cols]);
    assert.deepEqual(B.shape, [rows, 8]);
    const { err, qerr, norm } = await diskErrors(t, outT, A, B, scale);
    assert.ok(Math.abs(err - m.relError) < 1e-5, `${t.name}: disk ${err} vs report ${m.relError}`);
    assert.ok(m.relError < m.qloraRelError, `${t.name} LoftQ beats QLoRA`);
    assert.ok(qerr > m.relError);
    assert.equal(m.relErrorPerIter.length, 3);
    assert.ok(Math.abs(m.frobeniusNorm - norm) < 1e-6 * norm);
  }
});

test('deterministic: byte-identical files with 0, 1 and 2 workers', async () => {
  const digests: string[][] = [];
  for (const workers of [0, 1, 2]) {
    const out = tempDir();
    await quantizeCheckpoint(STORIES, { out, settings: { ...settings, iters: 2 }, workers });
    const { createHash } = await import('node:crypto');
    digests.push(
      ['model.safetensors', 'loftq_init/adapter_model.safetensors'].map((f) =>
        createHash('sha256')
          .update(fs.readFileSync(path.join(out, f)))
          .digest('hex'),
      ),
    );
  }
  assert.deepEqual(digests[1], digests[0]);
  assert.deepEqual(digests[2], digests[0]);
});

test('packed format: codes + scales + codebook dequantize to exactly the written backbone', async () => {
  const out = tempDir();
  const { report } = await quantizeCheckpoint(STORIES, {
    out,
    settings: { ...settings, bits: 3, iters: 1 },
    format: 'packed',
    workers: 1,
  });
  const packed = await openCheckpoint(path.join(out, 'model.packed.safetensors'));
  const backbone = await openCheckpoint(path.join(out, 'model.safetensors'));
  const info = JSON.parse(packed.metadata['loftq.packed']);
  for (const m of report.matrices) {
    const [rows, cols] = m.shape;
    assert.deepEqual(info[m.name], { bits: 3, blockSize: 64, quantizer: 'nf', shape: [rows, cols], dtype: 'F32' });
    const codes = unpackCodes(await readTensorBytes(packed.byName.get(`${m.name}.codes`)!), 3, rows * cols);
    const scales = await readTensorF32(packed.byName.get(`${m.name}.scales`)!);
    const table = await readTensorF32(packed.byName.get(`${m.name}.codebook`)!);
    assert.equal(table.length, 8);
    assert.deepEqual(dequantize(codes, scales, table, 64), await readTensorF32(backbone.byName.get(m.name)!), m.name);
  }
  assert.ok(packed.byName.has('model.embed_tokens.weight'));
});

test('sharded BF16 input: output sharded the same way, index rewritten, Q stored in BF16', async () => {
  // Build a 2-shard BF16 checkpoint from stories260K with the project's own writer.
  const { SafetensorsWriter, fromFloat32, INDEX_FILE } = await import('../../server/src/checkpoint');
  const src = await openCheckpoint(STORIES);
  const dir = tempDir();
  const half = Math.floor(src.tensors.length / 2);
  const shards = [src.tensors.slice(0, half), src.tensors.slice(half)];
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < 2; s++) {
    const name = `model-0000${s + 1}-of-00002.safetensors`;
    const w = await SafetensorsWriter.create(
      path.join(dir, name),
      shards[s].map((t) => ({ name: t.name, dtype: 'BF16', shape: t.shape })),
    );
    for (const t of shards[s]) {
      await w.write(t.name, fromFloat32('BF16', await readTensorF32(t)));
      weightMap[t.name] = name;
    }
    await w.commit();
  }
  fs.writeFileSync(path.join(dir, INDEX_FILE), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  fs.copyFileSync(path.join(STORIES, 'config.json'), path.join(dir, 'config.json'));
  const out = tempDir();
  const { report } = await quantizeCheckpoint(dir, { out, settings: { ...settings, bits: 4, iters: 2 }, workers: 1 });
  assert.ok(
    fs.existsSync(path.join(out, 'model-00001-of-00002.safetensors')) &&
      fs.existsSync(path.join(out, 'model-00002-of-00002.safetensors')),
  );
  const index = JSON.parse(fs.readFileSync(path.join(out, INDEX_FILE), 'utf8'));
  assert.deepEqual(index.weight_map, weightMap);
  const outCk = await openCheckpoint(out);
  assert.ok(outCk.tensors.every((t) => t.dtype === 'BF16'));
  const adapters = await openCheckpoint(path.join(out, 'loftq_init', 'adapter_model.safetensors'));
  assert.ok(adapters.tensors.every((t) => t.dtype === 'BF16'));
  assert.ok(report.matrices.every((m) => m.dtype === 'BF16' && m.relError < m.qloraRelError));
  // the reported error is that of the BF16 files (and of their NF4 reload), recomputed
  // from disk; it lies within BF16 rounding of the float32 run's
  const input = await openCheckpoint(dir);
  for (const m of report.matrices) {
    assert.ok(
      Math.abs(m.relError - m.relErrorPerIter.at(-1)!) < 0.01 * m.relErrorPerIter.at(-1)! + 0.004,
      `${m.name} ${m.relError} vs ${m.relErrorPerIter.at(-1)}`,
    );
    const mod = m.name.slice(0, -'.weight'.length);
    const disk = await diskErrors(
      input.byName.get(m.name)!,
      outCk.byName.get(m.name)!,
      adapters.byName.get(`base_model.model.${mod}.lora_A.weight`)!,
      adapters.byName.get(`base_model.model.${mod}.lora_B.weight`)!,
      1,
    );
    assert.ok(Math.abs(disk.err - m.relError) < 1e-5, `${m.name}: disk ${disk.err} vs report ${m.relError}`);
    assert.ok(
      Math.abs(disk.nf4err - m.nf4ReloadRelError!) < 1e-5,
      `${m.name}: NF4 reload, disk ${disk.nf4err} vs report ${m.nf4ReloadRelError}`,
    );
  }
});

const CANCEL_MID_RUN =
  'cancel mid-run: CancelledError; ' + 'an existing output folder holds no file, one the run created is gone';

test(CANCEL_MID_RUN, async () => {
  const existing = tempDir();
  const created = path.join(tempDir(), 'new-out');
  for (const out of [existing, created]) {
    const ac = new AbortController();
    let seen = 0;
    await assert.rejects(
      quantizeCheckpoint(fixture('real', 'tiny-llm'), {
        out,
        settings: { ...settings, iters: 5 },
        workers: 2,
        signal: ac.signal,
        onMatrix: () => {
          if (++seen === 2) ac.abort();
        },
      }),
      CancelledError,
    );
  }
  assert.deepEqual(fs.readdirSync(existing), []);
  assert.equal(fs.existsSync(created), false);
});

test('resume: a run killed after some matrices restarts from the journal and gives the same files', async () => {
  const out = tempDir();
  const ac = new AbortController();
  // Simulate a kill: keep the journal (a crash cannot clean up) by copying it before the abort's cleanup.
  const journal = path.join(out, JOURNAL_DIR);
  const saved = tempDir();
  let seen = 0;
  await assert.rejects(
    quantizeCheckpoint(STORIES, {
      out,
      settings,
      workers: 1,
      signal: ac.signal,
      onMatrix: () => {
        if (++seen === 10) {
          for (const f of fs.readdirSync(journal))
            if (f.endsWith('.safetensors')) fs.copyFileSync(path.join(journal, f), path.join(saved, f));
          ac.abort();
        }
      },
    }),
  );
  fs.mkdirSync(journal, { recursive: true });
  for (const f of fs.readdirSync(saved)) fs.copyFileSync(path.join(saved, f), path.join(journal, f));
  const kept = fs.readdirSync(journal).length;
  assert.ok(kept >= 9, `journal kept ${kept} entries`);
  let computed = 0;
  await quantizeCheckpoint(STORIES, { out, settings, workers: 1, onMatrix: () => computed++ });
  assert.equal(computed, 35 - kept, 'only the missing matrices are recomputed');
  const fresh = tempDir();
  await quantizeCheckpoint(STORIES, { out: fresh, settings, workers: 1 });
  for (const f of ['model.safetensors', 'loftq_init/adapter_model.safetensors'])
    assert.ok(fs.readFileSync(path.join(out, f)).equals(fs.readFileSync(path.join(fresh, f))), f);
  assert.ok(!fs.existsSync(journal), 'journal removed after a complete run');
});

test('plan file settings apply per matrix; rank_pattern written when ranks differ', async () => {
  const out = tempDir();
  const { report } = await quantizeCheckpoint(STORIES, {
    out,
    settings,
    workers: 1,
    plan: {
      checkpoint: '.',
      defaults: { bits: 2, rank: 8, iters: 1 },
      overrides: [
        { match: 'model.layers.{0..1}.mlp.*', bits: 4, rank: 16 },
        { match: '**.k_proj', skip: true },
      ],
    },
  });
  const by = new Map(report.matrices.map((m) => [m.name, m]));
  assert.equal(by.get('model.layers.0.mlp.up_proj.weight')!.bits, 4);
  assert.equal(by.get('model.layers.1.mlp.down_proj.weight')!.rank, 16);
  assert.equal(by.get('model.layers.2.mlp.down_proj.weight')!.bits, 2);
  assert.ok(!by.has('model.layers.0.self_attn.k_proj.weight'));
  const config = JSON.parse(fs.readFileSync(path.join(out, 'loftq_init', 'adapter_config.json'), 'utf8'));
  assert.equal(config.r, 8);
  // The shortest suffix that names only this module, so PEFT < 0.15 (which needs a dot before the key) matches it.
  assert.equal(config.rank_pattern['0\\.mlp\\.up_proj'], 16);
  assert.equal(Object.keys(config.rank_pattern).length, 6);
  assert.deepEqual(config.alpha_pattern, config.rank_pattern, 'alpha = r per module, so the scale stays 1');
});

test('analyze: errors per bit width with residual spectra; more bits, less error', async () => {
  const report = await analyzeCheckpoint(STORIES, {
    bits: [2, 4],
    rank: 8,
    iters: 2,
    quantizer: 'nf',
    blockSize: 64,
    spectrum: 16,
    workers: 1,
  });
  assert.equal(report.analyses!.length, 2);
  const [a2, a4] = report.analyses!;
  assert.equal(a2.matrices.length, 35);
  for (let i = 0; i < a2.matrices.length; i++) {
    assert.equal(a2.matrices[i].name, a4.matrices[i].name);
    assert.ok(a4.matrices[i].relError < a2.matrices[i].relError);
    const s = a2.matrices[i].residualSpectrum!;
    assert.equal(s.length, 16);
    for (let j = 1; j < s.length; j++) assert.ok(s[j] <= s[j - 1] + 1e-12);
  }
});
