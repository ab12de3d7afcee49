// The hook through which the engine gets calibration statistics: engine/calibration.ts
// calls the collector registered here: model/calibrate.ts's forward pass in-thread (the CLI)
// or on a worker thread (calibThread.ts, the language server). The
// types live with the statistics (model/) so that model/ never imports engine/.

import type { Checkpoint } from '../checkpoint/checkpoint';
import type { BackendChoice, CalibrationInfo, CalibrationParams } from '../protocol/lsp_ext';
import type { InputStats } from './stats';

/** Statistics already collected, keyed by weight tensor name (ridge as in CalibrationParams). */
export interface PreparedCalibration {
  stats: InputStats;
  info: CalibrationInfo;
}

export interface CollectOptions {
  backend?: BackendChoice;
  signal?: AbortSignal;
}

/** Reads or collects the statistics a CalibrationParams names. */
export type StatsCollector = (
  ck: Checkpoint,
  params: CalibrationParams,
  opts: CollectOptions,
) => Promise<PreparedCalibration>;

let collector: StatsCollector | undefined;

export function setStatsCollector(c: StatsCollector): void {
  collector = c;
}

export function statsCollector(): StatsCollector | undefined {
  return collector;
}
