// Messages between the engine's main thread and its worker threads.
import type { BackendChoice, BackendName, MatrixReport } from '../protocol/lsp_ext';
import type { SerializedError } from '../base/serializeError';
import type { AnalyzeJob, AnalyzeRow, MatrixJob } from './matrixJob';
import type { InputStat } from '../model/stats';
import type { CalibrationFactor } from '../loftq/calibrationFactor';

export type ToWorker =
  | { type: 'init'; backend: BackendChoice }
  | { type: 'quantize'; id: number; job: MatrixJob }
  | { type: 'analyze'; id: number; job: AnalyzeJob }
  /** Factor S·Sᵀ = G + λI once per statistic; the result lives in shared memory. */
  | { type: 'factor'; id: number; stat: InputStat; ridge: number };

export type FromWorker =
  | { type: 'ready'; backend: BackendName; flops: number }
  | { type: 'quantized'; id: number; report: MatrixReport; flops: number }
  | { type: 'analyzed'; id: number; rows: AnalyzeRow[]; flops: number }
  | { type: 'factored'; id: number; factor: CalibrationFactor }
  | { type: 'failed'; id: number; error: SerializedError };
