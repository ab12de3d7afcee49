// The engine's layer-streaming forward pass against an independent float64 forward written
// in test/model-reference.ts: the bundled stories260K (HF RoPE order), and generated
// checkpoints with GQA, Qwen2's q/k/v biases and an untied lm_head. Logits agree to ≤ 1e-4
// relative (‖Δ‖/‖ref‖ per sequence).

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { openCheckpoint } from '../../server/src/checkpoint';
import { createBackend } from '../../server/src/linalg/backend';
import { readModelConfig } from '../../server/src/model/config';
import { runForward } from '../../server/src/model/forward';
import { nativeAddon } from '../../server/src/linalg/nativeBackend';
import type { BackendChoice } from '../../server/src/registry';
import { requireNative } from './nativeRequired';
import { loadAll, makeTinyModel, referenceLogits } from '../model-reference';
import { repoRoot, tempDir } from '../helpers';

const STORIES = path.join(repoRoot, 'examples', 'stories260k');

async function engineLogits(
  dir: string,
  seqs: number[][],
  backend: BackendChoice = 'wasm',
): Promise<{ logits: Float32Array[]; peak: number }> {
  const ck = await openCheckpoint(dir);
  const c = await readModelConfig(ck.folder);
  const logits: Float32Array[] = [];
  const r = await runForward(ck, c, seqs, {
    backend: await createBackend(backend, { threads: 2 }),
    onLogits: (k, l) => {
      logits[k] = l;
    },
  });
  return { logits, peak: r.peakBytes };
}

async function compare(dir: string, seqs: number[][], backend: BackendChoice = 'wasm'): Promise<number> {
  const { cfg, t } = await loadAll(dir);
  const { logits } = await engineLogits(dir, seqs, backend);
  let worst = 0;
  seqs.forEach((ids, k) => {
    const ref = referenceLogits(cfg, t, ids);
    let num = 0,
      den = 0;
    ref.forEach((row, i) =>
      row.forEach((v, j) => {
        const d = logits[k][i * cfg.vocab_size + j] - v;
        num += d * d;
        den += v * v;
      }),
    );
    worst = Math.max(worst, Math.sqrt(num / den));
  });
  return worst;
}

test('stories260K: logits equal an independent float64 forward to 1e-4', async () => {
  const seqs = [
    [1, 403, 407, 261, 378, 426, 275, 259, 1, 8, 300, 301, 9, 401, 263, 500, 17, 60, 2, 3],
    [1, 43, 7],
    [5],
  ];
  const rel = await compare(STORIES, seqs);
  assert.ok(rel <= 1e-4, `relative logits error ${rel}`);
});

const NATIVE_FORWARD =
  'on the native backend (its products, attention and SiLU gate): logits equal the float64 forward';
test(NATIVE_FORWARD, async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  const rel = await compare(
    STORIES,
    [[1, 403, 407, 261, 378, 426, 275, 259, 1, 8, 300, 301], [1, 43, 7], [5]],
    'native',
  );
  assert.ok(rel <= 1e-4, `relative logits error ${rel}`);
});

test('generated GQA checkpoint with an untied lm_head: logits match the reference', async () => {
  const dir = tempDir();
  makeTinyModel(
    dir,
    {
      model_type: 'llama',
      hidden_size: 32,
      intermediate_size: 48,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      vocab_size: 40,
      rope_theta: 500,
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
    },
    { untiedHead: true },
  );
  const rel = await compare(dir, [
    [3, 9, 1, 0, 39, 22, 7, 7, 12],
    [4, 4],
  ]);
  assert.ok(rel <= 1e-4, `relative logits error ${rel}`);
});

test('generated Qwen2 checkpoint (q/k/v biases, head_dim ≠ hidden/heads): logits match the reference', async () => {
  const dir = tempDir();
  makeTinyModel(
    dir,
    {
      model_type: 'qwen2',
      hidden_size: 24,
      intermediate_size: 40,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 1,
      head_dim: 8,
      vocab_size: 30,
      rope_theta: 1000000,
      rms_norm_eps: 1e-6,
      tie_word_embeddings: true,
    },
    { qkvBias: true },
  );
  const rel = await compare(dir, [[1, 2, 3, 4, 5, 6, 7, 29, 28, 0]]);
  assert.ok(rel <= 1e-4, `relative logits error ${rel}`);
});

test('a biased Qwen2 run differs from the same weights without biases (the biases are used)', async () => {
  const dir = tempDir();
  makeTinyModel(
    dir,
    {
      model_type: 'qwen2',
      hidden_size: 16,
      intermediate_size: 24,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_key_value_heads: 2,
      vocab_size: 20,
      tie_word_embeddings: true,
    },
    { qkvBias: true },
  );
  const { cfg, t } = await loadAll(dir);
  const withB = referenceLogits(cfg, t, [1, 2, 3]);
  for (const k of [...t.keys()]) if (k.endsWith('.bias')) t.delete(k);
  const noB = referenceLogits(cfg, t, [1, 2, 3]);
  const { logits } = await engineLogits(dir, [[1, 2, 3]]);
  const dist = (ref: Float64Array[]) =>
    Math.max(...ref.flatMap((row, i) => [...row].map((v, j) => Math.abs(logits[0][i * 20 + j] - v))));
  assert.ok(dist(withB) < 1e-4 && dist(noB) > 1e-3, `with biases ${dist(withB)}, without ${dist(noB)}`);
});

test('peak memory is reported and bounded by one layer plus the activations', async () => {
  const seqs = [[1, 2, 3, 4, 5, 6, 7, 8]];
  const { peak } = await engineLogits(STORIES, seqs);
  // one layer of stories260K: 4·64² + 2·32·64 + 3·172·64 + 2·64 floats ≈ 216 KB; the head 128 KB.
  assert.ok(peak > 0 && peak < 1_000_000, `peak ${peak}`);
});
