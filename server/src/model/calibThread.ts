// The calibration collector of the language server: model/calibrate.ts's openCalibration
// (token reading, --calib-generate sampling, the forward pass and XᵀX) on a worker thread
// (dist/calib-worker.js), so the connection's thread keeps answering while a pass runs for
// minutes. Each layer's statistics come back as the pass makes them: G lives in shared
// memory (no copy), a diagonal's buffer is transferred, and inputs that share one statistic
// (q/k/v, gate/up) share it again on this side, as the engine's journal keys expect. The
// thread reuses a layer's G only after this side says it is done with it. A cancel
// terminates the thread at once (it writes nothing); typed errors are rebuilt here.

import { Worker } from 'node:worker_threads';
import { bundleScript } from '../base/bundleScript';
import { CancelledError } from '../base/errors';
import { deserializeError } from '../base/serializeError';
import type { SerializedError } from '../base/serializeError';
import type { Checkpoint } from '../checkpoint/checkpoint';
import type { BackendChoice, CalibrationInfo, CalibrationParams } from '../protocol/lsp_ext';
import { setStatsCollector } from './collector';
import type { CollectOptions, OpenedCalibration, StreamOptions } from './collector';
import type { SensitivityProbe } from './sensitivity';
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
  | { type: 'opened'; info: CalibrationInfo; stats?: PackedStats; streams: boolean; probes: boolean }
  | { type: 'layer'; stats: PackedStats; layer: number; layers: number }
  | { type: 'done' }
  | { type: 'probed'; kl: [string, number][]; sequences: number; tokens: number }
  | { type: 'failed'; error: SerializedError };

/** 'stream' starts the pass (with the engine's StreamOptions); 'next' says the last layer's
 *  statistics are no longer used; 'probe' runs the output-sensitivity probes (sensitivity.ts)
 *  on the source's tokens. */
export type ToCalibThread =
  { type: 'stream'; opts?: StreamOptions } | { type: 'next' } | { type: 'probe'; probes: SensitivityProbe[] };

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

/** The thread's messages, in arrival order; a failure of the thread (or a cancel) rejects the
 *  one awaited and every later one. */
class ThreadMessages {
  private readonly queue: FromCalibThread[] = [];
  private waiting?: { resolve(m: FromCalibThread): void; reject(e: unknown): void };
  private failure?: unknown;

  constructor(worker: Worker) {
    worker.on('message', (m: FromCalibThread) => {
      if (this.waiting) this.take().resolve(m);
      else this.queue.push(m);
    });
    worker.once('error', (e) => this.fail(e));
    worker.once('exit', (code) => this.fail(new Error(`the calibration thread stopped (exit ${code}) unfinished`)));
  }

  private take() {
    const w = this.waiting!;
    this.waiting = undefined;
    return w;
  }

  fail(e: unknown): void {
    this.failure ??= e;
    if (this.waiting) this.take().reject(this.failure);
  }

  /** The next message: a failure or a thread's report of one becomes the thrown error. */
  async next(): Promise<Exclude<FromCalibThread, { type: 'failed' }>> {
    let m = this.queue.shift();
    if (!m) {
      if (this.failure !== undefined) throw this.failure;
      m = await new Promise<FromCalibThread>((resolve, reject) => (this.waiting = { resolve, reject }));
    }
    if (m.type === 'failed') throw deserializeError(m.error);
    return m;
  }
}

/** openCalibration (calibrate.ts) on a worker thread: the source is opened (and checked) there
 *  and, when streamed, each layer's statistics come back as the pass produces them; the thread
 *  goes on to the next layer when the engine is done with them. A cancel terminates it. */
export async function openOnThread(
  ck: Checkpoint,
  params: CalibrationParams,
  opts: CollectOptions,
): Promise<OpenedCalibration> {
  if (opts.signal?.aborted) throw new CancelledError();
  const input: CalibThreadInput = { checkpoint: ck.path, params, backend: opts.backend };
  const worker = new Worker(bundleScript('calib-worker.js'), { workerData: input });
  const messages = new ThreadMessages(worker);
  // The thread may be inside a long synchronous product: stop it rather than ask it.
  const stop = () => {
    messages.fail(new CancelledError());
    void worker.terminate();
  };
  const watch = (signal?: AbortSignal) => {
    signal?.addEventListener('abort', stop);
    return () => signal?.removeEventListener('abort', stop);
  };
  const unwatch = watch(opts.signal);
  let opened;
  try {
    opened = await messages.next();
  } catch (e) {
    void worker.terminate();
    throw e;
  } finally {
    unwatch();
  }
  if (opened.type !== 'opened') throw new Error(`calibration thread: '${opened.type}' before 'opened'`);
  const stream: OpenedCalibration['stream'] = async (onLayer, signal, streamOpts) => {
    const unwatchStream = watch(signal ?? opts.signal);
    try {
      worker.postMessage({ type: 'stream', opts: { ...streamOpts } } satisfies ToCalibThread);
      for (;;) {
        const m = await messages.next();
        if (m.type === 'done') return;
        if (m.type !== 'layer') throw new Error(`calibration thread: unexpected '${m.type}'`);
        await onLayer(unpackStats(m.stats), m.layer, m.layers);
        worker.postMessage({ type: 'next' } satisfies ToCalibThread);
      }
    } finally {
      unwatchStream();
    }
  };
  const probe: OpenedCalibration['probe'] = async (probes, signal) => {
    const unwatchProbe = watch(signal ?? opts.signal);
    try {
      worker.postMessage({ type: 'probe', probes: [...probes] } satisfies ToCalibThread);
      const m = await messages.next();
      if (m.type !== 'probed') throw new Error(`calibration thread: unexpected '${m.type}'`);
      return { kl: new Map(m.kl), sequences: m.sequences, tokens: m.tokens };
    } finally {
      unwatchProbe();
    }
  };
  return {
    info: opened.info,
    ...(opened.stats ? { stats: unpackStats(opened.stats) } : {}),
    ...(opened.streams ? { stream } : {}),
    ...(opened.probes ? { probe } : {}),
    close() {
      void worker.terminate();
    },
  };
}

/** Lets quantize runs with CalibrationParams collect their statistics on a worker thread. */
export function registerThreadedCalibrationCollector(): void {
  setStatsCollector(openOnThread);
}
