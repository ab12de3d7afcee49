// The engine's public surface for the CLI, the language server, the planner and the bench.
// Implementations: engine/run.ts (quantizeCheckpoint, analyzeCheckpoint),
// loftq/loftq.ts (loftqMatrix), linalg/backend.ts (createBackend).

import type { PreparedCalibration } from '../model/collector';
import type { Workers } from './pool';
import type {
  BackendChoice,
  CalibrationParams,
  ExportFormat,
  MatrixReport,
  MatrixSettings,
  PlanFile,
  ProgressEvent,
  Report,
} from '../protocol/lsp_ext';

export interface RunOptions {
  /** Output folder (created if missing). */
  out: string;
  /** Settings for every matrix unless a plan overrides them. */
  settings: MatrixSettings;
  /** A parsed plan (defaults + overrides); its checkpoint field is ignored here. */
  plan?: PlanFile;
  /** Target globs; default DEFAULT_TARGETS. */
  targets?: string[];
  backend?: BackendChoice;
  format?: ExportFormat;
  /** Worker threads; 0 or absent: one per core; 'in-thread': the calling thread (pool.ts Workers). */
  workers?: Workers;
  /** `i/n`: process a deterministic 1/n of the matrices (many machines). */
  shard?: { index: number; count: number };
  /** What to do with a matrix holding NaN/Inf: refuse the run (default) or skip it. */
  onNonFinite?: 'refuse' | 'skip';
  /** Calibrated LoftQ: a source of statistics (read/collected by model/), or statistics
   *  already collected (keyed by weight tensor name; ridge as in CalibrationParams). */
  calibration?: CalibrationParams | PreparedCalibration;
  signal?: AbortSignal;
  onProgress?: (e: ProgressEvent) => void;
  onMatrix?: (m: MatrixReport, index: number, total: number) => void;
}

export type { PreparedCalibration };

export interface RunResult {
  report: Report;
  reportPath: string;
}

export interface AnalyzeOptions {
  bits: number[];
  rank: number;
  iters: number;
  quantizer: MatrixSettings['quantizer'];
  blockSize: number;
  targets?: string[];
  backend?: BackendChoice;
  /** As RunOptions.workers. */
  workers?: Workers;
  /** Also keep the top-N singular values of each final residual W − Q (rank prediction). */
  spectrum?: number;
  /** Calibrated LoftQ, as RunOptions.calibration: rows then carry output errors (and the
   *  spectrum of (W − Q)·S instead of W − Q's). */
  calibration?: CalibrationParams | PreparedCalibration;
  /** Instead of every width in `bits` at `rank` over the targets: these (bits, rank) runs, each over
   *  the targets it names (all when `names` is absent) — the planner's exact runs in one pass. */
  runs?: { bits: number[]; rank: number; names?: string[] }[];
  /** Calibrated from tokens: probe each matrix's output gain (default true; the planner's exact
   *  runs skip it, their matrices' gains are in the analysis already). */
  sensitivity?: boolean;
  signal?: AbortSignal;
  onProgress?: (e: ProgressEvent) => void;
}
