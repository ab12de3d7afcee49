// The forward pass in the bench: tokens per second of the calibration pass (the layer-streaming
// forward plus each linear input's XᵀX, model/collect.ts) on a generated preset checkpoint, and the
// token file a calibrated whole-checkpoint run reads. The preset's weights are random, so any ids
// inside the vocabulary are as good as text for timing; they are seeded so runs compare.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint } from '../server/src/checkpoint';
import type { MatmulBackend } from '../server/src/linalg/backend';
import { collectInputStatsWithInfo } from '../server/src/model/collect';
import { readModelConfig } from '../server/src/model/config';
import type { InputStats } from '../server/src/model/stats';
import { cpuSecondsNow } from './model';

export interface ForwardBenchResult {
  sequences: number;
  length: number;
  tokens: number;
  seconds: number;
  /** CPU seconds of this process over the pass (every thread, the GEMM threads included). */
  cpuSeconds: number;
  tokensPerSecond: number;
  /** One layer's weights + the batch's activations, as the forward pass counts them. */
  peakBytes: number;
  /** The whole process, sampled between layers. */
  peakRssMB: number;
  /** Statistics kept: full G per input, diagonal only above the width limit. */
  fullStats: number;
  diagStats: number;
  gemmGflop: number;
}

/** Parses "N,LEN" or "NxLEN" (sequences × tokens each). */
export function parseCalibShape(s: string): { sequences: number; length: number } {
  const m = /^(\d+)[,x](\d+)$/.exec(s);
  if (!m || Number(m[1]) < 1 || Number(m[2]) < 2) {
    throw new Error(`--model-calib takes N,LEN (e.g. 16,256), got '${s}'`);
  }
  return { sequences: Number(m[1]), length: Number(m[2]) };
}

/** Seeded token ids in [0, vocab) (xorshift32), BOS-free: a random model has no special tokens. */
export function benchTokens(vocab: number, sequences: number, length: number, seed = 1): number[][] {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
  return Array.from({ length: sequences }, () => Array.from({ length }, () => next() % vocab));
}

/** Writes the token file for `quantize --calib` next to the cached model and returns its path. */
export async function writeBenchTokens(modelDir: string, sequences: number, length: number): Promise<string> {
  const c = await readModelConfig(modelDir);
  const file = path.join(path.dirname(modelDir), `${path.basename(modelDir)}-calib-${sequences}x${length}.json`);
  if (!fs.existsSync(file)) fs.writeFileSync(file, JSON.stringify(benchTokens(c.vocabSize, sequences, length)));
  return file;
}

export async function benchForward(
  modelDir: string,
  sequences: number,
  length: number,
  backend: MatmulBackend,
  onLayer?: (layer: number, layers: number) => void,
): Promise<ForwardBenchResult> {
  const ck = await openCheckpoint(modelDir);
  const c = await readModelConfig(ck.folder);
  const seqs = benchTokens(c.vocabSize, sequences, length);
  const f0 = backend.flops;
  const t0 = performance.now();
  const c0 = cpuSecondsNow();
  // Streamed, as a calibrated quantize runs it: each layer's statistics are counted and let go.
  let fullStats = 0,
    diagStats = 0;
  const onLayerStats = async (stats: InputStats) => {
    for (const x of new Set(stats.values())) {
      if (x.kind === 'full') fullStats++;
      else diagStats++;
    }
  };
  // bf16 linear layers where the backend has them, as a calibrated quantize runs the pass.
  const opts = { backend, config: c, onLayer, onLayerStats, bf16Products: true };
  const { forward } = await collectInputStatsWithInfo(ck, seqs, opts);
  const seconds = (performance.now() - t0) / 1000;
  const cpuSeconds = cpuSecondsNow() - c0;
  return {
    sequences,
    length,
    tokens: forward.tokens,
    seconds,
    cpuSeconds,
    tokensPerSecond: forward.tokens / seconds,
    peakBytes: forward.peakBytes,
    peakRssMB: forward.peakRssBytes / 2 ** 20,
    fullStats,
    diagStats,
    gemmGflop: (backend.flops - f0) / 1e9,
  };
}
