// Messages between the engine's main thread and its worker threads.
import type { BackendChoice, BackendName, MatrixReport } from '../protocol/lsp_ext';
import type { SerializedError } from '../base/serializeError';
import type { AnalyzeJob, AnalyzeRow, MatrixJob } from './matrixJob';

export type ToWorker =
  /** threads: each matrix's products and kernels split over this many (1: this thread alone). */
  | { type: 'init'; backend: BackendChoice; threads: number }
  | { type: 'quantize'; id: number; job: MatrixJob }
  | { type: 'analyze'; id: number; job: AnalyzeJob }
  /** Give the pages of the idle buffers back (engine/phaseMemory.ts); answered by 'trimmed'. */
  | { type: 'trim'; id: number };

export type FromWorker =
  | { type: 'ready'; backend: BackendName; flops: number }
  /** The job's buffers are free and its entry written, its commit still running: the worker takes
   *  its next job (its 'quantized' follows when the entry is committed). */
  | { type: 'computed'; id: number }
  | { type: 'quantized'; id: number; report: MatrixReport; flops: number }
  | { type: 'analyzed'; id: number; rows: AnalyzeRow[]; flops: number }
  | { type: 'failed'; id: number; error: SerializedError }
  | { type: 'trimmed'; id: number; bytes: number };
