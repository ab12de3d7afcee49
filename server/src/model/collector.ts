// The hook through which the engine gets calibration statistics: engine/calibration.ts
// calls the collector registered here: model/calibrate.ts's forward pass in-thread (the CLI)
// or on a worker thread (calibThread.ts, the language server). The
// types live with the statistics (model/) so that model/ never imports engine/.

import type { Checkpoint } from '../checkpoint/checkpoint';
import type { BackendChoice, CalibrationInfo, CalibrationParams } from '../protocol/lsp_ext';
import type { InputStats } from './stats';
import type { SensitivityProbe } from './sensitivity';

/** Statistics already collected, keyed by weight tensor name (ridge as in CalibrationParams). */
export interface PreparedCalibration {
  stats: InputStats;
  info: CalibrationInfo;
}

/** A calibration source opened: its input read and checked (token ids, a sampled set, an
 *  imatrix), nothing run over it yet — so a bad file is refused before anything is written. */
export interface OpenedCalibration {
  info: CalibrationInfo;
  /** Statistics known at once (an imatrix). */
  stats?: InputStats;
  /** The forward pass over the tokens: each decoder layer's statistics handed to `onLayer` as
   *  soon as the layer has run; the pass waits for the promise and then reuses their memory
   *  (collect.ts, onLayerStats), so one layer's statistics are alive at a time. */
  stream?(
    onLayer: (stats: InputStats, layer: number, layers: number) => Promise<void>,
    signal?: AbortSignal,
    opts?: StreamOptions,
  ): Promise<void>;
  /** Output sensitivities (sensitivity.ts) on the source's first tokens: KL per probed matrix.
   *  Token sources only (an imatrix has no tokens). */
  probe?(probes: readonly SensitivityProbe[], signal?: AbortSignal): Promise<ProbeResult>;
  /** Releases what the source holds (a calibration thread), streamed or not. */
  close(): void;
}

export interface StreamOptions {
  /** Before each hand-off to onLayer, the pass gives the pages of its transient buffers (the
   *  layer's weights, its activations, the native module's cached packings) back to the
   *  system: the engine asks for it when the pass's and the layer's jobs' working sets would
   *  not fit its memory budget together (a 7B model), and not otherwise — their pages are
   *  faulted in again at the next layer. */
  discardBetweenLayers?: boolean;
}

export interface ProbeResult {
  /** Mean KL(original ‖ this matrix quantized alone) in nats per token, by weight name. */
  kl: Map<string, number>;
  sequences: number;
  tokens: number;
}

export interface CollectOptions {
  backend?: BackendChoice;
  signal?: AbortSignal;
}

/** Opens the source a CalibrationParams names. */
export type StatsCollector = (
  ck: Checkpoint,
  params: CalibrationParams,
  opts: CollectOptions,
) => Promise<OpenedCalibration>;

let collector: StatsCollector | undefined;

export function setStatsCollector(c: StatsCollector): void {
  collector = c;
}

export function statsCollector(): StatsCollector | undefined {
  return collector;
}
