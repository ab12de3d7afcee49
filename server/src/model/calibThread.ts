// The calibration collector of the language server: model/calibrate.ts's collectCalibration
// (token reading, --calib-generate sampling, the forward pass and XᵀX) on a worker thread
// (dist/calib-worker.js), so the connection's thread keeps answering while a pass runs for
// minutes. G can be hundreds of MB per input: the statistics come back with their buffers
// transferred, not copied, and inputs that share one statistic (q/k/v, gate/up) share it
// again on this side, as the engine's journal keys expect. A cancel terminates the thread at
// once (it writes nothing); typed errors are rebuilt here.

import { Worker } from 'node:worker_threads';
import { bundleScript } from '../base/bundleScript';
import { CancelledError } from '../base/errors';
import { deserializeError } from '../base/serializeError';
import type { SerializedError } from '../base/serializeError';
import type { Checkpoint } from '../checkpoint/checkpoint';
import type { BackendChoice, CalibrationInfo, CalibrationParams } from '../protocol/lsp_ext';
import { setStatsCollector } from './collector';
import type { CollectOptions, PreparedCalibration } from './collector';
import type { InputStat, InputStats } from './stats';

export interface CalibThreadInput {
  checkpoint: string;
  params: CalibrationParams;
  backend?: BackendChoice;
}

/** InputStats as one list of distinct statistics and, per tensor name, an index into it. */
export interface PackedStats {
  names: string[];
  which: number[];
  stats: InputStat[];
}

export type FromCalibThread =
  { type: 'done'; stats: PackedStats; info: CalibrationInfo } | { type: 'failed'; error: SerializedError };

export function packStats(stats: InputStats): { packed: PackedStats; transfer: ArrayBuffer[] } {
  const index = new Map<InputStat, number>();
  const packed: PackedStats = { names: [], which: [], stats: [] };
  for (const [name, stat] of stats) {
    let i = index.get(stat);
    if (i === undefined) {
      i = packed.stats.push(stat) - 1;
      index.set(stat, i);
    }
    packed.names.push(name);
    packed.which.push(i);
  }
  const buffers = new Set<ArrayBuffer>();
  for (const s of packed.stats) {
    const b = (s.kind === 'full' ? s.g : s.d).buffer;
    if (b instanceof ArrayBuffer) buffers.add(b);
  }
  return { packed, transfer: [...buffers] };
}

export function unpackStats(p: PackedStats): InputStats {
  return new Map(p.names.map((name, k) => [name, p.stats[p.which[k]]]));
}

export function collectOnThread(
  ck: Checkpoint,
  params: CalibrationParams,
  opts: CollectOptions,
): Promise<PreparedCalibration> {
  if (opts.signal?.aborted) return Promise.reject(new CancelledError());
  const input: CalibThreadInput = { checkpoint: ck.path, params, backend: opts.backend };
  const worker = new Worker(bundleScript('calib-worker.js'), { workerData: input });
  return new Promise<PreparedCalibration>((resolve, reject) => {
    let settled = false;
    const settle = (f: () => void) => {
      if (settled) return;
      settled = true;
      opts.signal?.removeEventListener('abort', cancel);
      f();
    };
    // The pass may be inside a long synchronous product: stop the thread rather than ask it.
    const cancel = () => {
      settle(() => reject(new CancelledError()));
      void worker.terminate();
    };
    opts.signal?.addEventListener('abort', cancel);
    worker.once('message', (m: FromCalibThread) => {
      settle(() =>
        m.type === 'done' ? resolve({ stats: unpackStats(m.stats), info: m.info }) : reject(deserializeError(m.error)),
      );
      void worker.terminate();
    });
    worker.once('error', (e) => settle(() => reject(e)));
    worker.once('exit', (code) =>
      settle(() => reject(new Error(`the calibration thread stopped (exit ${code}) without statistics`))),
    );
  });
}

/** Lets quantize runs with CalibrationParams collect their statistics on a worker thread. */
export function registerThreadedCalibrationCollector(): void {
  setStatsCollector(collectOnThread);
}
