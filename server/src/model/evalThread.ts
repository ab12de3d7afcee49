// Runs `loftq eval` on a worker thread (dist/eval-worker.js) and returns its result as a promise:
// the language server's way to evaluate without blocking its connection. Typed errors
// (InputError, CheckpointError, CancelledError) are rebuilt on this side.

import { Worker } from 'node:worker_threads';
import { bundleScript } from '../base/bundleScript';
import { deserializeError } from '../base/serializeError';
import type { SerializedError } from '../base/serializeError';
import type { BackendChoice } from '../protocol/lsp_ext';
import type { EvalProgress, EvaluateResult } from './evaluate';
import type { EvalRunResult } from './evalRun';

export interface EvalThreadInput {
  original: string;
  out: string;
  /** A token file, or `generate` (held-out tokens sampled from the original; runEval's options). */
  tokens?: string;
  generate?: { sequences: number; length: number; seed?: number };
  backend: BackendChoice;
  updateReport: boolean;
}

export type ToEvalThread = { type: 'cancel' };
export type FromEvalThread =
  | { type: 'progress'; progress: EvalProgress }
  | { type: 'sample'; step: number; steps: number }
  | { type: 'done'; result: EvaluateResult; reportFile?: string }
  | { type: 'failed'; error: SerializedError };

export interface EvalThreadOptions {
  signal?: AbortSignal;
  onProgress?(p: EvalProgress): void;
  /** Held-out tokens being sampled: step of steps. */
  onSample?(step: number, steps: number): void;
}

export function evalOnThread(input: EvalThreadInput, opts: EvalThreadOptions): Promise<EvalRunResult> {
  const worker = new Worker(bundleScript('eval-worker.js'), { workerData: input });
  const cancel = () => worker.postMessage({ type: 'cancel' } satisfies ToEvalThread);
  if (opts.signal?.aborted) cancel();
  opts.signal?.addEventListener('abort', cancel);
  return new Promise<EvalRunResult>((resolve, reject) => {
    let settled = false;
    worker.on('message', (m: FromEvalThread) => {
      if (m.type === 'progress') opts.onProgress?.(m.progress);
      else if (m.type === 'sample') opts.onSample?.(m.step, m.steps);
      else if (m.type === 'done') {
        settled = true;
        resolve({ result: m.result, reportFile: m.reportFile });
      } else {
        settled = true;
        reject(deserializeError(m.error));
      }
    });
    worker.on('error', (e) => {
      settled = true;
      reject(e);
    });
    worker.on('exit', (code) => {
      if (!settled) reject(new Error(`the evaluation thread stopped (exit ${code})`));
    });
  }).finally(() => opts.signal?.removeEventListener('abort', cancel));
}
