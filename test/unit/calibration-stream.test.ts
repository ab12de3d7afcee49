// Streamed calibration (engine/run.ts + model/collect.ts onLayerStats): the forward pass hands
// each decoder layer's statistics to the engine as soon as the layer has run, the engine
// quantizes that layer's matrices, and only then does the pass go on, reusing the statistics'
// memory. So one layer's G is alive at a time — and the results are exactly those of the same
// statistics collected in one piece and handed in, on either collector (in-thread, as the CLI
// runs it, or on the language server's calibration thread).

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { quantizeCheckpoint } from '../../server/src/engine/run';
import { mergeShards } from '../../server/src/engine/merge';
import { openCheckpoint } from '../../server/src/checkpoint';
import { CancelledError, InputError } from '../../server/src/base/errors';
import { JOURNAL_DIR } from '../../server/src/base/journal';
import { collectInputStats, collectInputStatsWithInfo, createCollectionBackend } from '../../server/src/model/collect';
import { registerCalibrationCollector } from '../../server/src/model/calibrate';
import { registerThreadedCalibrationCollector } from '../../server/src/model/calibThread';
import type { InputStat, InputStats } from '../../server/src/model/stats';
import type { ProgressEvent, Report } from '../../server/src/protocol/lsp_ext';
import type { RunOptions } from '../../server/src/engine/api';
import { repoRoot, tempDir } from '../helpers';

const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const LAYERS = 5;
const settings = { bits: 2, rank: 4, iters: 2, quantizer: 'nf' as const, blockSize: 64 };
const LINEARS = ['q_proj', 'k_proj', 'v_proj', 'o_proj']
  .map((m) => `self_attn.${m}`)
  .concat(['gate_proj', 'up_proj', 'down_proj'].map((m) => `mlp.${m}`));

/** Token ids in stories260K's vocabulary (512), from a fixed LCG: 3 sequences of 20–28 tokens. */
function sequences(): number[][] {
  let x = 12345;
  const next = () => (x = (x * 1103515245 + 12345) % 2 ** 31) % 512;
  return [20, 28, 24].map((len) => Array.from({ length: len }, next));
}

function tokenFile(): string {
  const file = path.join(tempDir(), 'ids.json');
  fs.writeFileSync(file, JSON.stringify(sequences()));
  return file;
}

const valuesOf = (s: InputStat) => Array.from(s.kind === 'full' ? s.g : s.d);

test('the pass hands on one layer at a time, reusing its G memory; values as of one whole pass', async () => {
  const ck = await openCheckpoint(path.join(STORIES, 'model.safetensors'));
  const whole = await (async () => {
    const backend = await createCollectionBackend('wasm');
    return collectInputStats(ck, sequences(), { backend }).finally(() => backend.close());
  })();
  assert.equal(whole.size, LAYERS * LINEARS.length);

  const backend = await createCollectionBackend('wasm');
  const seen: { layer: number; names: string[]; buffers: Set<ArrayBufferLike> }[] = [];
  const { stats: kept } = await collectInputStatsWithInfo(ck, sequences(), {
    backend,
    onLayerStats: async (stats, layer, layers) => {
      assert.equal(layers, LAYERS);
      const buffers = new Set<ArrayBufferLike>();
      for (const [name, stat] of stats) {
        assert.deepEqual(valuesOf(stat), valuesOf(whole.get(name)!), `${name}: the same statistic as one whole pass`);
        if (stat.kind === 'full') buffers.add(stat.g.buffer);
      }
      seen.push({ layer, names: [...stats.keys()].sort(), buffers });
      // A later layer must not write into what the engine holds before this promise settles.
      await new Promise((r) => setTimeout(r, 5));
      for (const [name, stat] of stats) assert.deepEqual(valuesOf(stat), valuesOf(whole.get(name)!), name);
    },
  }).finally(() => backend.close());

  assert.equal(kept.size, 0, 'nothing is kept once handed on');
  assert.deepEqual(
    seen.map((s) => s.layer),
    [1, 2, 3, 4, 5],
  );
  seen.forEach((s, l) =>
    assert.deepEqual(
      s.names,
      LINEARS.map((m) => `model.layers.${l}.${m}.weight`).sort(),
      `layer ${l}: its inputs only`,
    ),
  );
  // Four inputs per layer (q/k/v, o, gate/up, down): after the first layer, no new G memory.
  assert.equal(seen[0].buffers.size, 4);
  for (const s of seen.slice(1)) assert.deepEqual(s.buffers, seen[0].buffers, `layer ${s.layer} reuses layer 1's G`);
});

type Collector = 'in-thread' | 'thread';

async function calibratedRun(out: string, collector: Collector, extra: Partial<RunOptions> = {}) {
  if (collector === 'thread') registerThreadedCalibrationCollector();
  else registerCalibrationCollector();
  return quantizeCheckpoint(STORIES, {
    out,
    settings,
    backend: 'wasm',
    workers: 2,
    calibration: { file: tokenFile() },
    ...extra,
  });
}

function sameFiles(a: string, b: string): void {
  for (const f of ['model.safetensors', path.join('loftq_init', 'adapter_model.safetensors')])
    assert.ok(fs.readFileSync(path.join(a, f)).equals(fs.readFileSync(path.join(b, f))), `${f} differs`);
}

const errorsOf = (r: Report) => r.matrices.map((m) => [m.name, m.outputRelError, m.qloraOutputRelError, m.relError]);

test('a token-calibrated run quantizes each layer as its statistics arrive; results as if handed in', async () => {
  const ck = await openCheckpoint(path.join(STORIES, 'model.safetensors'));
  const backend = await createCollectionBackend('wasm');
  const stats: InputStats = await collectInputStats(ck, sequences(), { backend }).finally(() => backend.close());
  const handed = path.join(tempDir(), 'handed');
  const info = { source: 'tokens' as const, sequences: 3, tokens: 72, fullStatMaxDim: 8192, ridge: 0.01 };
  const ref = await quantizeCheckpoint(STORIES, {
    out: handed,
    settings,
    backend: 'wasm',
    workers: 2,
    calibration: { stats, info },
  });

  for (const collector of ['in-thread', 'thread'] as const) {
    const out = path.join(tempDir(), collector);
    const events: ProgressEvent[] = [];
    const { report } = await calibratedRun(out, collector, { onProgress: (e: ProgressEvent) => events.push(e) });
    sameFiles(out, handed);
    assert.deepEqual(errorsOf(report), errorsOf(ref.report), `${collector}: the same errors`);
    assert.equal(report.calibration?.tokens, 72);
    assert.equal(report.calibration?.sequences, 3);

    // Interleaved: every matrix of layer l is done after layer l's statistics and before layer l + 1's.
    const layerAt = (l: number) =>
      events.findIndex((e) => e.name === `calibration statistics (layer ${l} of ${LAYERS})`);
    for (let l = 0; l < LAYERS; l++) {
      const from = layerAt(l + 1),
        to = l + 1 < LAYERS ? layerAt(l + 2) : events.length;
      assert.ok(from >= 0 && to > from, `${collector}: layer ${l + 1}'s statistics announced in order`);
      const doneHere = events
        .slice(from, to)
        .filter((e) => e.phase === 'done')
        .map((e) => e.name);
      assert.deepEqual(
        doneHere.sort(),
        LINEARS.map((m) => `model.layers.${l}.${m}.weight`).sort(),
        `${collector}: layer ${l}'s matrices between its statistics and the next layer's`,
      );
    }
  }
});

test('a streamed run that fails keeps the finished layers; the rerun computes only the rest, same files', async () => {
  const out = path.join(tempDir(), 'out');
  let computed = 0;
  const boom = new Error('stop after the first layer');
  await assert.rejects(
    calibratedRun(out, 'in-thread', {
      onMatrix: () => {
        if (++computed === LINEARS.length) throw boom;
      },
    }),
    (e) => e === boom,
  );
  const entries = fs.readdirSync(path.join(out, JOURNAL_DIR)).filter((f) => f.endsWith('.safetensors'));
  assert.ok(entries.length >= LINEARS.length && entries.length < LAYERS * LINEARS.length, `${entries.length} entries`);
  computed = 0;
  await calibratedRun(out, 'thread', { onMatrix: () => computed++ });
  assert.equal(computed, LAYERS * LINEARS.length - entries.length, 'only the matrices without an entry');
  const whole = path.join(tempDir(), 'whole');
  await calibratedRun(whole, 'in-thread');
  sameFiles(out, whole);
});

for (const collector of ['in-thread', 'thread'] as const) {
  test(`a cancel in the middle of the pass (${collector}) leaves nothing behind`, async () => {
    const parent = tempDir();
    const out = path.join(parent, 'out');
    const ac = new AbortController();
    await assert.rejects(
      calibratedRun(out, collector, {
        signal: ac.signal,
        onProgress: (e: ProgressEvent) => {
          if (e.name === `calibration statistics (layer 3 of ${LAYERS})`) ac.abort();
        },
      }),
      (e) => e instanceof CancelledError,
    );
    assert.deepEqual(fs.readdirSync(parent), [], 'no output folder, no journal');
  });
}

test('calibrated shards merge into the whole run, calibration included; other calibrations refused', async () => {
  const tokens = tokenFile();
  const shardRun = (out: string, index: number, ridge?: number) =>
    quantizeCheckpoint(STORIES, {
      out,
      settings,
      backend: 'wasm',
      workers: 2,
      calibration: { file: tokens, ...(ridge === undefined ? {} : { ridge }) },
      shard: { index, count: 2 },
    });
  registerCalibrationCollector();
  const root = tempDir();
  const [s0, s1, odd] = ['s0', 's1', 'odd'].map((d) => path.join(root, d));
  await shardRun(s0, 0);
  await shardRun(s1, 1);
  const merged = await mergeShards([s0, s1], { out: path.join(root, 'merged') });
  const whole = await quantizeCheckpoint(STORIES, {
    out: path.join(root, 'whole'),
    settings,
    backend: 'wasm',
    calibration: { file: tokens },
  });
  sameFiles(path.join(root, 'merged'), path.join(root, 'whole'));
  assert.deepEqual(merged.report.calibration, whole.report.calibration);
  assert.deepEqual(errorsOf(merged.report), errorsOf(whole.report));

  await shardRun(odd, 1, 0.05);
  await assert.rejects(
    mergeShards([s0, odd], { out: path.join(root, 'mixed') }),
    (e) => e instanceof InputError && /differs from .* in calibration: .*"ridge":0.05/.test(e.message),
  );
  assert.ok(!fs.existsSync(path.join(root, 'mixed')), 'nothing written');
});
