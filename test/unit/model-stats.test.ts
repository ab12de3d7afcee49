// Calibration statistics: G = XᵀX/N of every linear layer's input equals the second moment
// computed independently from the float64 reference forward's inputs; q/k/v and gate/up share
// one object; inputs wider than fullStatMaxDim keep only the diagonal (equal to diag(XᵀX/N)).

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { openCheckpoint, readTensorF32 } from '../../server/src/checkpoint';
import { createBackend } from '../../server/src/linalg/backend';
import { collectInputStats, createCollectionBackend } from '../../server/src/model/collect';
import { nativeAddon } from '../../server/src/kernels/native';
import { requireNative } from './nativeRequired';
import { loadAll, referenceLogits } from '../model-reference';
import { repoRoot } from '../helpers';

const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const SEQS = [[1, 403, 407, 261, 378, 426, 275, 259, 1, 8, 300, 301], [1, 43, 7, 99, 100], [12]];

/** Reference XᵀX/N per capturing weight name, from the float64 forward. */
async function referenceMoments(): Promise<Map<string, { dim: number; g: Float64Array }>> {
  const { cfg, t } = await loadAll(STORIES);
  const acc = new Map<string, { dim: number; g: Float64Array; n: number }>();
  for (const ids of SEQS) {
    referenceLogits(cfg, t, ids, (name, rows) => {
      const dim = rows[0].length;
      let a = acc.get(name);
      if (!a) acc.set(name, (a = { dim, g: new Float64Array(dim * dim), n: 0 }));
      for (const x of rows) for (let i = 0; i < dim; i++) for (let j = 0; j < dim; j++) a.g[i * dim + j] += x[i] * x[j];
      a.n += rows.length;
    });
  }
  return new Map([...acc].map(([k, a]) => [k, { dim: a.dim, g: a.g.map((v) => v / a.n) }]));
}

/** Reference Σ‖W·x‖²/N per weight name over the float64 forward's inputs of that weight. */
async function referenceOutputSquares(): Promise<Map<string, number>> {
  const { cfg, t } = await loadAll(STORIES);
  const acc = new Map<string, { sum: number; n: number }>();
  for (const ids of SEQS) {
    referenceLogits(cfg, t, ids, (captured, rows) => {
      // The reference names an input by its first reader: q_proj's is k's and v's, gate's is up's.
      const readers = captured.endsWith('q_proj.weight')
        ? ['q_proj', 'k_proj', 'v_proj'].map((m) => captured.replace('q_proj', m))
        : captured.endsWith('gate_proj.weight')
          ? [captured, captured.replace('gate_proj', 'up_proj')]
          : [captured];
      for (const name of readers) {
        const w = t.get(name)!,
          dim = rows[0].length,
          out = w.length / dim;
        let a = acc.get(name);
        if (!a) acc.set(name, (a = { sum: 0, n: 0 }));
        for (const x of rows)
          for (let r = 0; r < out; r++) {
            let y = 0;
            for (let i = 0; i < dim; i++) y += w[r * dim + i] * x[i];
            a.sum += y * y;
          }
        a.n += rows.length;
      }
    });
  }
  return new Map([...acc].map(([k, a]) => [k, a.sum / a.n]));
}

function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0,
    den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

/** The engine's statistics of SEQS on stories260K, on the calibration pass's backend. */
async function storiesStats(choice: 'wasm' | 'native') {
  const backend = await createCollectionBackend(choice);
  const ck = await openCheckpoint(STORIES);
  const stats = await collectInputStats(ck, SEQS, { backend }).finally(() => backend.close());
  return { ck, stats };
}

for (const choice of ['wasm', 'native'] as const)
  test(`statistics equal XᵀX/N of the reference forward's inputs (full G, exactly symmetric): ${choice}`, async (t) => {
    // Native: the collection backend's threaded XᵀX bands and its threaded scale-and-mirror.
    if (choice === 'native' && !nativeAddon().module) return requireNative(t, nativeAddon().problem);
    const ref = await referenceMoments();
    const { stats } = await storiesStats(choice);
    assert.equal(stats.size, 5 * 7);
    const tokens = SEQS.flat().length;
    for (const [name, r] of ref) {
      const s = stats.get(name)!;
      assert.ok(s && s.kind === 'full', `${name}: full statistic`);
      assert.equal(s.dim, r.dim);
      assert.equal(s.count, tokens);
      const e = relDiff(s.g, r.g);
      assert.ok(e < 1e-5, `${name}: relative difference ${e}`);
      for (let i = 0; i < s.dim; i++)
        for (let j = 0; j < i; j++) assert.equal(s.g[i * s.dim + j], s.g[j * s.dim + i], `${name}: G[${i}, ${j}]`);
    }
    for (let l = 0; l < 5; l++) {
      const p = `model.layers.${l}.`;
      assert.equal(stats.get(p + 'self_attn.k_proj.weight'), stats.get(p + 'self_attn.q_proj.weight'));
      assert.equal(stats.get(p + 'self_attn.v_proj.weight'), stats.get(p + 'self_attn.q_proj.weight'));
      assert.equal(stats.get(p + 'mlp.up_proj.weight'), stats.get(p + 'mlp.gate_proj.weight'));
      assert.notEqual(stats.get(p + 'self_attn.o_proj.weight'), stats.get(p + 'self_attn.q_proj.weight'));
    }
  });

for (const choice of ['wasm', 'native'] as const)
  test(`each linear layer's Σ‖W·x‖²/N rides on its input's statistic (tr(W·G·Wᵀ) for free): ${choice}`, async (t) => {
    if (choice === 'native' && !nativeAddon().module) return requireNative(t, nativeAddon().problem);
    const ref = await referenceOutputSquares();
    const { ck, stats } = await storiesStats(choice);
    assert.equal(ref.size, 5 * 7);
    for (const [name, want] of ref) {
      const s = stats.get(name)!;
      assert.ok(s.kind === 'full', name);
      const got = s.outputSquares?.[name];
      assert.ok(got !== undefined && Math.abs(got - want) <= 1e-5 * want, `${name}: ${got} against ${want}`);
      // The identity the calibrated job relies on: the same number as tr(W·G·Wᵀ) from the statistic.
      const w = await readTensorF32(ck.tensors.find((x) => x.name === name)!);
      const out = w.length / s.dim;
      let trace = 0;
      for (let r = 0; r < out; r++) {
        const wr = w.subarray(r * s.dim, (r + 1) * s.dim);
        for (let i = 0; i < s.dim; i++) {
          let gw = 0;
          for (let j = 0; j < s.dim; j++) gw += s.g[i * s.dim + j] * wr[j];
          trace += wr[i] * gw;
        }
      }
      assert.ok(Math.abs(got - trace) <= 1e-5 * trace, `${name}: ${got} against tr(W·G·Wᵀ) ${trace}`);
    }
  });

test("a linear group with a bias (Qwen2's q/k/v) records no output squares; the others do", async () => {
  const dir = path.join(repoRoot, 'test', 'fixtures', 'arch', 'qwen2');
  const ck = await openCheckpoint(dir);
  const stats = await collectInputStats(ck, [[1, 5, 9, 2, 7]], { backend: await createBackend('wasm') });
  const of = (name: string) => {
    const s = stats.get(`model.layers.0.${name}.weight`);
    return s?.kind === 'full' ? s.outputSquares?.[`model.layers.0.${name}.weight`] : undefined;
  };
  assert.ok(
    ck.tensors.some((x) => x.name === 'model.layers.0.self_attn.q_proj.bias'),
    'the fixture has q/k/v biases',
  );
  for (const name of ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj'])
    assert.equal(of(name), undefined, name);
  for (const name of ['self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'])
    assert.ok((of(name) ?? 0) > 0, name);
});

test('bf16 products (the calibration pass where AVX512-BF16 runs): statistics within bf16 noise', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  if (!module.bf16()) return t.skip('this CPU has no AVX512-BF16: the pass runs in float32');
  const backend = await createCollectionBackend('native');
  const ref = await referenceMoments();
  const ck = await openCheckpoint(STORIES);
  const stats = await collectInputStats(ck, SEQS, { backend, bf16Products: true }).finally(() => backend.close());
  let largest = 0;
  for (const [name, r] of ref) {
    const s = stats.get(name)!;
    assert.ok(s.kind === 'full', name);
    const e = relDiff(s.g, r.g);
    // bf16 rounds each product's inputs to 2⁻⁹ (0.2 % on the first layer's XᵀX alone); through
    // the layers of this 64-wide model the differences compound (2 % at layer 4) — what a bf16 model on a GPU
    // gives; held-out KL of the calibrated init moved 0.661 → 0.659 (NF4 r16, docs/bench.md).
    assert.ok(e < 5e-2, `${name}: relative difference ${e}`);
    largest = Math.max(largest, e);
  }
  // The products did run in bf16: float32 ones stay within 1e-5 (test above).
  assert.ok(largest > 1e-4, `largest relative difference ${largest}`);
});

test('inputs wider than fullStatMaxDim keep the diagonal of XᵀX/N', async () => {
  const ref = await referenceMoments();
  const ck = await openCheckpoint(STORIES);
  const stats = await collectInputStats(ck, SEQS, { backend: await createBackend('wasm'), fullStatMaxDim: 100 });
  for (const [name, r] of ref) {
    const s = stats.get(name)!;
    if (r.dim > 100) {
      assert.ok(s.kind === 'diag', `${name} (width ${r.dim}) is diagonal`);
      const diag = Float64Array.from({ length: r.dim }, (_, i) => r.g[i * r.dim + i]);
      assert.ok(relDiff(s.d, diag) < 1e-5, name);
    } else {
      assert.ok(s.kind === 'full', `${name} (width ${r.dim}) is full`);
    }
  }
});
