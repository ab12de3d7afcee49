// Model-level evaluation (model/adapters.ts, model/evaluate.ts) on stories260K outputs of real
// quantize runs. Expectations come from elsewhere: the float64 forward of test/model-reference.ts
// on weights merged here (Q + (α/r)·B·A with r and α looked up by PEFT's pre-0.15 rule, written
// out in this file), the report's own QLoRA weight error, an identity (a backbone that makes
// Q + s·B·A = W exactly gives KL 0 and top-1 100 %), and LoftQ's reason to exist (its init is
// closer to the original model than QLoRA's).

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint, readTensorF32 } from '../../server/src/checkpoint';
import { quantizeCheckpoint } from '../../server/src/engine/run';
import { createBackend } from '../../server/src/linalg/backend';
import { openLoftqOutput } from '../../server/src/model/adapters';
import { readModelConfig } from '../../server/src/model/config';
import { chunkSequences, evaluateOutput, EvalVariant } from '../../server/src/model/evaluate';
import { loadAll, referenceLogits, writeCheckpoint } from '../model-reference';
import { fixture, repoRoot, tempDir } from '../helpers';

const STORIES = path.join(repoRoot, 'examples', 'stories260k');
// Sampled from stories260K itself (seeded, temperature 1): text the model finds likely, as real text would be.
const SEQS: number[][] = JSON.parse(fs.readFileSync(fixture('stories260k-tokens.json'), 'utf8')).slice(0, 4);

type Settings = { bits: number; rank: number; iters: number };

async function quantizeStories(settings: Settings, plan?: object): Promise<string> {
  const out = tempDir();
  await quantizeCheckpoint(STORIES, {
    out,
    workers: 'in-thread',
    settings: { ...settings, quantizer: 'nf', blockSize: 64 },
    ...(plan ? { plan: { checkpoint: '.', defaults: settings, ...plan } } : {}),
  });
  return out;
}

async function evaluate(out: string, maxHeldLogits?: number) {
  const original = await openCheckpoint(STORIES);
  const c = await readModelConfig(original.folder);
  const lo = await openLoftqOutput(out, original, c.numLayers);
  const logits = new Map<string, Float32Array>();
  const r = await evaluateOutput(original, c, lo, SEQS, {
    backend: await createBackend('wasm'),
    maxHeldLogits,
    onLogits: (v: EvalVariant, k, l) => {
      logits.set(`${v}/${k}`, l);
    },
  });
  return { r, logits, vocab: c.vocabSize };
}

/** PEFT < 0.15: the first key with re.match(rf".*\.{key}$", module). */
function oldPeftLookup(pattern: Record<string, number>, fallback: number, module: string): number {
  for (const [k, v] of Object.entries(pattern)) if (new RegExp(`^.*\\.${k}$`).test(module)) return v;
  return fallback;
}

function relDiff(a: Float32Array, ref: Float64Array[], vocab: number): number {
  let num = 0,
    den = 0;
  ref.forEach((row, i) =>
    row.forEach((v, j) => {
      const d = a[i * vocab + j] - v;
      num += d * d;
      den += v * v;
    }),
  );
  return Math.sqrt(num / den);
}

test('mixed-rank LoftQ init: logits equal a float64 forward on Q + (α/r)·B·A merged here (rank_pattern)', async () => {
  const out = await quantizeStories(
    { bits: 2, rank: 8, iters: 2 },
    {
      overrides: [
        { match: 'model.layers.{0..1}.mlp.*', rank: 16 },
        { match: 'model.layers.4.self_attn.o_proj', rank: 4 },
      ],
    },
  );
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'loftq_init', 'adapter_config.json'), 'utf8'));
  assert.ok(Object.keys(cfg.rank_pattern).length >= 7, 'the plan gives mixed ranks');
  // Make α differ from r so that a scale of 1 (ignoring lora_alpha) would be caught: α = 2r for every
  // module, and the written B halved, so the product the engine stored is unchanged.
  cfg.lora_alpha = 2 * cfg.r;
  cfg.alpha_pattern = Object.fromEntries(Object.entries(cfg.rank_pattern).map(([k, r]) => [k, 2 * (r as number)]));
  fs.writeFileSync(path.join(out, 'loftq_init', 'adapter_config.json'), JSON.stringify(cfg));
  const adapters = await openCheckpoint(path.join(out, 'loftq_init', 'adapter_model.safetensors'));
  const halved: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const t of adapters.tensors) {
    const d = await readTensorF32(t);
    halved[t.name] = { shape: t.shape, data: t.name.endsWith('lora_B.weight') ? d.map((x) => x / 2) : d };
  }
  writeCheckpoint(path.join(out, 'loftq_init'), cfg, halved);
  const adir = path.join(out, 'loftq_init');
  fs.renameSync(path.join(adir, 'model.safetensors'), path.join(adir, 'adapter_model.safetensors'));
  fs.writeFileSync(path.join(out, 'loftq_init', 'adapter_config.json'), JSON.stringify(cfg));

  const { r, logits, vocab } = await evaluate(out);
  const { cfg: refCfg, t } = await loadAll(out);
  let modules = 0;
  for (const name of [...t.keys()]) {
    const m = name.replace(/\.weight$/, '');
    const A = halved[`base_model.model.${m}.lora_A.weight`],
      B = halved[`base_model.model.${m}.lora_B.weight`];
    if (!A) continue;
    modules++;
    const rank = oldPeftLookup(cfg.rank_pattern, cfg.r, m),
      alpha = oldPeftLookup(cfg.alpha_pattern, cfg.lora_alpha, m);
    assert.equal(A.shape[0], rank, `rank of ${m}`);
    const q = t.get(name)!,
      cols = A.shape[1];
    for (let i = 0; i < B.shape[0]; i++) {
      for (let j = 0; j < cols; j++) {
        let s = 0;
        for (let k = 0; k < rank; k++) s += B.data[i * rank + k] * A.data[k * cols + j];
        q[i * cols + j] += (alpha / rank) * s;
      }
    }
  }
  assert.equal(modules, 35);
  SEQS.forEach((ids, k) => {
    const d = relDiff(logits.get(`loftq/${k}`)!, referenceLogits(refCfg, t, ids), vocab);
    assert.ok(d <= 1e-4, `sequence ${k}: relative logits difference ${d}`);
  });
  assert.ok(r.loftq.kl > 0 && r.loftq.top1 < 100, JSON.stringify(r.loftq));
});

test('NF4 rank 16: the LoftQ init is closer to the original model than QLoRA; chunking changes nothing', async () => {
  const out = await quantizeStories({ bits: 4, rank: 16, iters: 5 });
  const { r } = await evaluate(out);
  assert.ok(r.loftq.kl < r.qlora.kl, `KL LoftQ ${r.loftq.kl} vs QLoRA ${r.qlora.kl}`);
  assert.ok(r.loftq.lnPplRatio < r.qlora.lnPplRatio + 0.05, JSON.stringify(r));
  assert.equal(r.tokens, SEQS.flat().length);
  assert.equal(r.sequences, 4);
  for (const side of [r.loftq, r.qlora]) {
    assert.ok(side.klMedian <= side.klP99 && side.kl > 0 && side.top1 > 0 && side.top1 <= 100, JSON.stringify(side));
    assert.ok(Math.abs(side.lnPplRatio - Math.log(side.ppl / r.original.ppl)) < 1e-12);
  }
  // One sequence per chunk: every figure the same.
  const { r: split } = await evaluate(out, 1);
  for (const k of ['kl', 'klMedian', 'klP99', 'top1', 'ppl'] as const) {
    assert.ok(Math.abs(split.loftq[k] - r.loftq[k]) <= 1e-9 * Math.abs(r.loftq[k]), `loftq ${k}`);
    assert.ok(Math.abs(split.qlora[k] - r.qlora[k]) <= 1e-9 * Math.abs(r.qlora[k]), `qlora ${k}`);
  }
});

test('QLoRA init: quantize(W) with the recorded settings has the reported error; original logits match', async () => {
  const out = await quantizeStories({ bits: 3, rank: 4, iters: 1 });
  const original = await openCheckpoint(STORIES);
  const c = await readModelConfig(original.folder);
  const lo = await openLoftqOutput(out, original, c.numLayers);
  const report = JSON.parse(fs.readFileSync(path.join(out, 'loftq-report.json'), 'utf8'));
  const { qloraWeightHook } = await import('../../server/src/model/adapters');
  const hook = qloraWeightHook(lo);
  for (const m of report.matrices.slice(0, 7)) {
    const w = await readTensorF32(original.byName.get(m.name)!);
    const q = (await hook(m.name, w, m.shape[0], m.shape[1]))!;
    let num = 0,
      den = 0;
    for (let i = 0; i < w.length; i++) {
      num += (w[i] - q[i]) ** 2;
      den += w[i] ** 2;
    }
    const rel = Math.sqrt(num / den);
    assert.ok(Math.abs(rel - m.qloraRelError) < 1e-5, `${m.name}: ${rel} vs ${m.qloraRelError}`);
  }
  const { logits, vocab } = await evaluate(out);
  const { cfg, t } = await loadAll(STORIES);
  const d = relDiff(logits.get('original/0')!, referenceLogits(cfg, t, SEQS[0]), vocab);
  assert.ok(d <= 1e-4, `original logits ${d}`);
});

test('identity: a backbone with Q = W − s·B·A gives KL 0 and top-1 100 % for the LoftQ side', async () => {
  const out = await quantizeStories({ bits: 2, rank: 8, iters: 1 });
  const ck = await openCheckpoint(path.join(out, 'model.safetensors'));
  const adapters = await openCheckpoint(path.join(out, 'loftq_init', 'adapter_model.safetensors'));
  const orig = await openCheckpoint(STORIES);
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const info of ck.tensors) {
    const w = await readTensorF32(orig.byName.get(info.name)!);
    const m = info.name.replace(/\.weight$/, '');
    const a = adapters.byName.get(`base_model.model.${m}.lora_A.weight`);
    if (a) {
      const A = await readTensorF32(a);
      const B = await readTensorF32(adapters.byName.get(`base_model.model.${m}.lora_B.weight`)!);
      const [rows, cols] = info.shape,
        r = a.shape[0];
      for (let i = 0; i < rows; i++)
        for (let j = 0; j < cols; j++) {
          let s = 0;
          for (let k = 0; k < r; k++) s += B[i * r + k] * A[k * cols + j];
          w[i * cols + j] -= s; // α = r in the files loftq writes: s = 1
        }
    }
    tensors[info.name] = { shape: info.shape, data: w };
  }
  writeCheckpoint(out, JSON.parse(fs.readFileSync(path.join(STORIES, 'config.json'), 'utf8')), tensors);
  const { r } = await evaluate(out);
  assert.ok(r.loftq.kl < 1e-6 && r.loftq.klP99 < 1e-6, `KL ${r.loftq.kl}`);
  assert.equal(r.loftq.top1, 100);
  assert.ok(Math.abs(r.loftq.lnPplRatio) < 1e-5);
  assert.ok(r.qlora.kl > 0.01, `QLoRA at NF2 is far from the original: ${r.qlora.kl}`);
});

test('a folder that does not fit: another model, a rank that disagrees with lora_A, a missing report', async () => {
  const out = await quantizeStories({ bits: 4, rank: 4, iters: 1 });
  const original = await openCheckpoint(STORIES);
  const c = await readModelConfig(original.folder);
  // Another model: drop a tensor from the backbone.
  const other = tempDir();
  const ck = await openCheckpoint(path.join(out, 'model.safetensors'));
  const kept: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const t of ck.tensors) {
    if (t.name !== 'model.layers.4.mlp.up_proj.weight') kept[t.name] = { shape: t.shape, data: await readTensorF32(t) };
  }
  writeCheckpoint(other, {}, kept);
  await assert.rejects(
    openLoftqOutput(other, original, c.numLayers),
    /has no tensor 'model\.layers\.4\.mlp\.up_proj\.weight'.*not produced from/,
  );

  const cfgFile = path.join(out, 'loftq_init', 'adapter_config.json');
  const cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
  fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, rank_pattern: { 'layers\\.2\\.mlp\\.down_proj': 8 } }));
  await assert.rejects(
    openLoftqOutput(out, original, c.numLayers),
    /adapter_model\.safetensors: .*layers\.2\.mlp\.down_proj.*rank 8.*size mismatch/,
  );
  fs.writeFileSync(cfgFile, JSON.stringify(cfg));
  fs.rmSync(path.join(out, 'loftq-report.json'));
  await assert.rejects(openLoftqOutput(out, original, c.numLayers), /loftq-report\.json: does not exist/);
});

test('chunks hold at most the limit, at least one sequence each, in order', () => {
  assert.deepEqual(chunkSequences([4, 4, 4, 9, 1], 10, 80), [
    [0, 2],
    [2, 3],
    [3, 4],
    [4, 5],
  ]);
  assert.deepEqual(chunkSequences([4, 4], 10, 1000), [[0, 2]]);
  assert.deepEqual(chunkSequences([], 10, 1000), []);
});

test('sharded BF16 checkpoint (make-model tiny): the output is read through its index; KL LoftQ < QLoRA', async () => {
  const { makeModel } = await import('../../server/src/tools/make-model-lib');
  const ckpt = tempDir(),
    out = tempDir();
  await makeModel({ preset: 'tiny', out: ckpt, seed: 3 });
  const settings = { bits: 2, rank: 8, iters: 2, quantizer: 'nf' as const, blockSize: 64 };
  await quantizeCheckpoint(ckpt, { out, workers: 'in-thread', settings });
  assert.ok(fs.existsSync(path.join(out, 'model.safetensors.index.json')), 'the output is sharded like the input');
  const original = await openCheckpoint(ckpt);
  const c = await readModelConfig(original.folder);
  const lo = await openLoftqOutput(out, original, c.numLayers);
  assert.equal(lo.backbone.kind, 'sharded');
  assert.equal(lo.matrices.size, 28);
  const seqs = [
    [1, 5, 9, 200, 17, 3, 44, 511],
    [7, 7, 8, 100, 300],
  ];
  const r = await evaluateOutput(original, c, lo, seqs, { backend: await createBackend('wasm') });
  assert.ok(r.loftq.kl > 0 && r.loftq.kl < r.qlora.kl, `LoftQ ${r.loftq.kl} vs QLoRA ${r.qlora.kl}`);
  assert.equal(r.tokens, 13);
});
