// The calibration collector the engine calls (model/collector.ts → setStatsCollector): turns
// a CalibrationParams (one source) into statistics per linear input. Token sources run the
// original model over the tokens (collect.ts); an imatrix is read as diagonal statistics.
// Registered where the engine is wired, so engine/ keeps no static dependency on the forward
// pass: in-thread by the CLI (registerCalibrationCollector), on a worker thread running this
// same function by the language server (calibThread.ts).

import type { Checkpoint } from '../checkpoint/checkpoint';
import { setStatsCollector } from './collector';
import type { CollectOptions, PreparedCalibration } from './collector';
import { createBackend } from '../linalg/backend';
import type { CalibrationParams } from '../protocol/lsp_ext';
import { readCalibrationTokens } from './calibTokens';
import { collectInputStatsWithInfo, createCollectionBackend, DEFAULT_FULL_STAT_MAX_DIM } from './collect';
import { readModelConfig } from './config';
import { generateSequences } from './generate';
import { readImatrix } from './imatrix';
import { CALIBRATION_SPECS } from '../registry';

/** The seed of --calib-generate when none is given. */
export const DEFAULT_GENERATE_SEED: number = CALIBRATION_SPECS.generateSeed.default;

export async function collectCalibration(
  ck: Checkpoint,
  p: CalibrationParams,
  opts: CollectOptions,
): Promise<PreparedCalibration> {
  const c = await readModelConfig(ck.folder);
  if (p.imatrix !== undefined) {
    const stats = await readImatrix(p.imatrix, c);
    const tokens = Math.max(...[...stats.values()].map((s) => s.count));
    // An imatrix is diagonal throughout: no input gets a full G (fullStatMaxDim 0).
    return { stats, info: { source: 'imatrix', file: p.imatrix, sequences: 0, tokens, fullStatMaxDim: 0, ridge: 0 } };
  }
  const backend = await createBackend(opts.backend ?? 'wasm');
  let sequences: number[][];
  let source: 'tokens' | 'text' | 'generated';
  let seed: number | undefined;
  if (p.generate) {
    seed = p.generate.seed ?? DEFAULT_GENERATE_SEED;
    const { sequences: n, length } = p.generate;
    sequences = await generateSequences(ck, c, { sequences: n, length, seed, backend, signal: opts.signal });
    source = 'generated';
  } else {
    const read = await readCalibrationTokens(p.file!, ck.folder, c);
    sequences = read.sequences;
    source = read.source;
  }
  // The pass's products on every core (generation above stays on one backend: its tokens
  // are reproducible per backend).
  const collectBackend = await createCollectionBackend(opts.backend ?? 'wasm');
  const collectOpts = { backend: collectBackend, signal: opts.signal, config: c };
  const { stats, forward } = await collectInputStatsWithInfo(ck, sequences, collectOpts).finally(() =>
    collectBackend.close(),
  );
  return {
    stats,
    // The ridge is the engine's to fill in (resolveCalibration), from the params or its default.
    info: {
      source,
      ...(p.file === undefined ? {} : { file: p.file }),
      sequences: forward.sequences,
      tokens: forward.tokens,
      fullStatMaxDim: DEFAULT_FULL_STAT_MAX_DIM,
      ridge: 0,
      ...(seed === undefined ? {} : { seed }),
    },
  };
}

/** Lets quantize runs with CalibrationParams collect their statistics here. */
export function registerCalibrationCollector(): void {
  setStatsCollector(collectCalibration);
}
