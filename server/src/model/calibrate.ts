// The calibration collector the engine calls (model/collector.ts → setStatsCollector): opens
// a CalibrationParams (one source) as statistics per linear input. Token sources run the
// original model over the tokens (collect.ts) when the engine streams them, a layer at a time;
// an imatrix is read as diagonal statistics.
// Registered where the engine is wired, so engine/ keeps no static dependency on the forward
// pass: in-thread by the CLI (registerCalibrationCollector), on a worker thread running this
// same function by the language server (calibThread.ts).

import type { Checkpoint } from '../checkpoint/checkpoint';
import { setStatsCollector } from './collector';
import type { CollectOptions, OpenedCalibration } from './collector';
import { createBackend } from '../linalg/backend';
import type { BackendChoice } from '../registry';
import { NativeBackend } from '../linalg/nativeBackend';
import { nativeAddon } from '../kernels/native';
import type { CalibrationParams } from '../protocol/lsp_ext';
import { readCalibrationTokens } from './calibTokens';
import { collectInputStatsWithInfo, createCollectionBackend, DEFAULT_FULL_STAT_MAX_DIM } from './collect';
import { readModelConfig } from './config';
import { generateSequences } from './generate';
import { probeSensitivities, probeSequences } from './sensitivity';
import { readImatrix } from './imatrix';
import { checkConfigAgainstCheckpoint } from './weights';
import { CALIBRATION_SPECS } from '../registry';

/** The seed of --calib-generate when none is given. */
export const DEFAULT_GENERATE_SEED: number = CALIBRATION_SPECS.generateSeed.default;

/** Which products the calibration pass runs on a backend choice: bf16 where it is the native
 *  backend (auto picks it where built) with AVX512-BF16 (collect.ts's bf16Products). */
async function passProducts(choice: BackendChoice): Promise<'bf16' | 'float32'> {
  if (choice === 'auto' && !nativeAddon().module) return 'float32';
  if (choice !== 'native' && choice !== 'auto') return 'float32';
  const backend = await createBackend(choice);
  return backend instanceof NativeBackend && backend.bf16 ? 'bf16' : 'float32';
}

export async function openCalibration(
  ck: Checkpoint,
  p: CalibrationParams,
  opts: CollectOptions,
): Promise<OpenedCalibration> {
  const c = await readModelConfig(ck.folder);
  checkConfigAgainstCheckpoint(ck, c);
  if (p.imatrix !== undefined) {
    const stats = await readImatrix(p.imatrix, c);
    const tokens = Math.max(...[...stats.values()].map((s) => s.count));
    // An imatrix is diagonal throughout: no input gets a full G (fullStatMaxDim 0).
    const info = { source: 'imatrix' as const, file: p.imatrix, sequences: 0, tokens, fullStatMaxDim: 0, ridge: 0 };
    return { stats, info, close() {} };
  }
  let sequences: number[][];
  let source: 'tokens' | 'text' | 'generated';
  let seed: number | undefined;
  if (p.generate) {
    seed = p.generate.seed ?? DEFAULT_GENERATE_SEED;
    const { sequences: n, length } = p.generate;
    const backend = await createBackend(opts.backend ?? 'wasm');
    sequences = await generateSequences(ck, c, { sequences: n, length, seed, backend, signal: opts.signal });
    source = 'generated';
  } else {
    const read = await readCalibrationTokens(p.file!, ck.folder, c, opts.signal);
    sequences = read.sequences;
    source = read.source;
  }
  return {
    // The ridge is the engine's to fill in (resolveCalibration), from the params or its default.
    info: {
      source,
      ...(p.file === undefined ? {} : { file: p.file }),
      sequences: sequences.length,
      tokens: sequences.reduce((a, s) => a + s.length, 0),
      fullStatMaxDim: DEFAULT_FULL_STAT_MAX_DIM,
      ridge: 0,
      ...(seed === undefined ? {} : { seed }),
      products: p.products === 'float32' ? 'float32' : await passProducts(opts.backend ?? 'wasm'),
    },
    async stream(onLayer, signal, streamOpts) {
      // The pass's products on every core (generation above stays on one backend: its tokens
      // are reproducible per backend).
      const backend = await createCollectionBackend(opts.backend ?? 'wasm');
      // bf16 products (linear layers, XᵀX) where the backend has them: the statistics of the
      // model a bf16 GPU run would see, the pass ~30 % faster (docs/bench.md); held-out KL of
      // the calibrated init on stories260K moved by less than 1.5 % (and down).
      const collectOpts = {
        backend,
        signal: signal ?? opts.signal,
        config: c,
        onLayerStats: onLayer,
        bf16Products: p.products !== 'float32',
        discardBetweenLayers: streamOpts?.discardBetweenLayers === true,
      };
      await collectInputStatsWithInfo(ck, sequences, collectOpts).finally(() => backend.close());
    },
    async probe(probes, signal) {
      // float32 products, as `loftq eval`: the probes measure the model's output.
      const backend = await createBackend(opts.backend ?? 'wasm');
      const seqs = probeSequences(sequences);
      const kl = await probeSensitivities(ck, c, seqs, probes, { backend, signal: signal ?? opts.signal });
      return { kl, sequences: seqs.length, tokens: seqs.reduce((a, s) => a + s.length, 0) };
    },
    close() {},
  };
}

/** Lets quantize runs with CalibrationParams collect their statistics here. */
export function registerCalibrationCollector(): void {
  setStatsCollector(openCalibration);
}
