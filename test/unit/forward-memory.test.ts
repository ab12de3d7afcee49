// The calibration pass's memory (issue 28): the forward pass holds one linear group's weights at
// a time (model/forward.ts, weights.ts readGroup), and with discardBetweenLayers gives the pages
// of its transient buffers back before each hand-off — so they read as zeros when the next layer
// starts. Statistics with the option must equal, exactly, those of a pass without it, on every
// family of the architecture table (the norms, biases, fused and parallel layouts differ), on
// the native backend where built and on wasm, in-thread and through the calibration thread.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint } from '../../server/src/checkpoint';
import { createBackend } from '../../server/src/linalg/backend';
import { nativeAddon } from '../../server/src/linalg/nativeBackend';
import { openCalibration } from '../../server/src/model/calibrate';
import { openOnThread } from '../../server/src/model/calibThread';
import { collectInputStatsWithInfo, createCollectionBackend } from '../../server/src/model/collect';
import type { OpenedCalibration } from '../../server/src/model/collector';
import { readModelConfig } from '../../server/src/model/config';
import { runForward } from '../../server/src/model/forward';
import type { InputStats } from '../../server/src/model/stats';
import { layerLinears } from '../../server/src/model/weights';
import type { BackendChoice } from '../../server/src/registry';
import { fixture, tempDir } from '../helpers';
import { requireNative } from './nativeRequired';

const FAMILIES = ['qwen2', 'qwen2-tied', 'llama3', 'mistral', 'gemma', 'gemma2', 'phi', 'phi3'];

/** The fixture's reference tokens: 4 sequences of 32 (hidden 64: every activation spans pages). */
const tokensOf = (dir: string) =>
  (JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8')) as { tokens: number[][] }).tokens;

/** Each handed-on statistic's values copied (the pass reuses G's memory after the hand-off). */
type Copied = Map<string, number[]>;

function copyInto(all: Copied, stats: InputStats): void {
  for (const [name, s] of stats) all.set(name, Array.from(s.kind === 'full' ? s.g : s.d));
}

async function collect(
  family: string,
  choice: BackendChoice,
  discardBetweenLayers: boolean,
): Promise<{ stats: Copied; discarded: number }> {
  const dir = fixture('arch', family);
  const ck = await openCheckpoint(dir);
  const stats: Copied = new Map();
  const backend = await createCollectionBackend(choice);
  try {
    const r = await collectInputStatsWithInfo(ck, tokensOf(dir), {
      backend,
      bf16Products: true,
      discardBetweenLayers,
      onLayerStats: async (s) => copyInto(stats, s),
    });
    return { stats, discarded: r.forward.discardedBytes };
  } finally {
    await backend.close();
  }
}

async function sameWithDiscard(choice: BackendChoice): Promise<void> {
  for (const family of FAMILIES) {
    const plain = await collect(family, choice, false);
    const discarding = await collect(family, choice, true);
    const c = await readModelConfig(fixture('arch', family));
    assert.equal(plain.stats.size, c.numLayers * layerLinears(c).length, `${family}: every linear input`);
    assert.equal(plain.discarded, 0, `${family}: nothing given back unasked`);
    // Without the native module there is nothing to give pages back with (discardPages: false).
    if (nativeAddon().module) assert.ok(discarding.discarded > 0, `${family} (${choice}): pages given back`);
    assert.deepEqual(discarding.stats, plain.stats, `${family} (${choice}): the same statistics, bit for bit`);
  }
}

test('discardBetweenLayers (native): the statistics of every family equal those without it, bit for bit', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  await sameWithDiscard('native');
});

test('discardBetweenLayers (wasm): the statistics of every family equal those without it, bit for bit', async () => {
  await sameWithDiscard('wasm');
});

async function streamed(opened: OpenedCalibration, discardBetweenLayers: boolean): Promise<Copied> {
  const stats: Copied = new Map();
  try {
    await opened.stream!(async (s) => copyInto(stats, s), undefined, { discardBetweenLayers });
  } finally {
    opened.close();
  }
  return stats;
}

test('the stream option reaches the pass in-thread and on the calibration thread; statistics unchanged', async () => {
  const dir = fixture('arch', 'gemma2');
  const file = path.join(tempDir(), 'ids.json');
  fs.writeFileSync(file, JSON.stringify(tokensOf(dir)));
  const ck = await openCheckpoint(dir);
  const params = { file, products: 'float32' as const };
  const plain = await streamed(await openCalibration(ck, params, { backend: 'wasm' }), false);
  assert.equal(plain.size, 14);
  const inThread = await streamed(await openCalibration(ck, params, { backend: 'wasm' }), true);
  assert.deepEqual(inThread, plain, 'in-thread (the CLI)');
  const onThread = await streamed(await openOnThread(ck, params, { backend: 'wasm' }), true);
  assert.deepEqual(onThread, plain, 'on the calibration thread (the language server)');
});

/** Every linear input X (copied) and the logits of a bf16-products pass over the fixture's tokens. */
async function bf16Pass(family: string, hooked: boolean): Promise<number[][]> {
  const dir = fixture('arch', family);
  const seen: number[][] = [];
  await runForward(await openCheckpoint(dir), await readModelConfig(dir), tokensOf(dir), {
    backend: await createBackend('native', { threads: 2 }),
    bf16Linear: true,
    hooks: {
      onInput: (_names, x) => void seen.push(Array.from(x)),
      // A weight hook sees float32: the identity one makes the pass take the widened weights.
      ...(hooked ? { weight: (_name: string, w: Float32Array) => w.slice() } : {}),
    },
    onLogits: (_k, logits) => void seen.push(Array.from(logits)),
  });
  return seen;
}

test("bf16 products of a BF16 checkpoint's stored weights equal those of their float32 widening", async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  if (!module.bf16()) return t.skip('this CPU has no AVX512-BF16');
  for (const family of FAMILIES) {
    const asStored = await bf16Pass(family, false);
    assert.equal(asStored.length, 2 * (family === 'phi' ? 3 : 4) + 4, `${family}: every input and sequence`);
    assert.deepEqual(asStored, await bf16Pass(family, true), family);
  }
});

test("the pass holds one linear group's weights at a time, not a whole layer's", async () => {
  for (const family of ['llama3', 'phi3', 'phi']) {
    const dir = fixture('arch', family);
    const c = await readModelConfig(dir);
    // Two tokens: the weights dwarf the activations.
    const r = await runForward(await openCheckpoint(dir), c, [[1, 2]], {
      backend: await createBackend('wasm', { threads: 1 }),
    });
    const L = c.layout;
    const bytes = (specs: readonly { rows: number; cols: number }[]) =>
      specs.reduce((a, s) => a + 4 * s.rows * s.cols, 0);
    const largestGroup = Math.max(...[L.qkv, [L.o], L.up, [L.down]].map(bytes));
    const layer = bytes(layerLinears(c));
    assert.ok(
      r.peakBytes >= largestGroup,
      `${family}: peak ${r.peakBytes} B holds the largest group (${largestGroup} B)`,
    );
    // The rest of the peak: norms, biases and two tokens' activations, a few KiB here.
    assert.ok(r.peakBytes < largestGroup + 16384, `${family}: peak ${r.peakBytes} B, one layer's weights ${layer} B`);
    assert.ok(largestGroup + 16384 < layer, `${family}: the bound tells a group from a layer`);
  }
});
