// `loftq plan CKPT`: the analysis the planner needs, run on the checkpoint — one LoftQ run
// per candidate bit width at the largest candidate rank R, keeping the top-R singular values
// of each final residual so smaller ranks can be predicted (table.ts). Calibrated, the runs are
// calibrated LoftQ's and the residual is (W − Q)·S: the planner then works in output error.

import type { BackendChoice, CalibrationParams, ProgressEvent, Quantizer, Report } from '../protocol/lsp_ext';
import type { PreparedCalibration } from './api';
import { analyzeCheckpoint } from './run';

export interface PlanAnalysisOptions {
  bits: number[];
  ranks: number[];
  iters: number;
  quantizer: Quantizer;
  blockSize: number;
  targets?: string[];
  backend?: BackendChoice;
  workers?: number;
  calibration?: CalibrationParams | PreparedCalibration;
  signal?: AbortSignal;
  onProgress?: (e: ProgressEvent) => void;
}

export function analyzeForPlan(checkpoint: string, o: PlanAnalysisOptions): Promise<Report> {
  const rank = Math.max(...o.ranks);
  return analyzeCheckpoint(checkpoint, {
    bits: [...new Set(o.bits)].sort((a, b) => a - b),
    rank,
    spectrum: rank,
    iters: o.iters,
    quantizer: o.quantizer,
    blockSize: o.blockSize,
    targets: o.targets,
    backend: o.backend,
    workers: o.workers,
    calibration: o.calibration,
    signal: o.signal,
    onProgress: o.onProgress,
  });
}
