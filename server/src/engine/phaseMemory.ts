// A calibrated run alternates two phases in one process: the calibration pass over a decoder
// layer, then that layer's matrix jobs. Each keeps its buffers for its next turn, because fresh
// pages cost more than the work (docs/bench.md) — so together they held both working sets at
// once: 4.3 GB for a 7B model's 16×256-token run. Where the two would not fit the budget
// together, each phase gives its idle buffers' pages back at the hand-off (the pass: the
// stream's discardBetweenLayers; the jobs: Executor.trim), and pays their page faults again at
// its next turn; where they fit (a 1.1B model) nothing changes. Native only: without the
// module nothing is given back.

import type { BackendChoice } from '../protocol/lsp_ext';
import { backendName } from '../linalg/backend';
import { NATIVE_WORKER_BYTES_PER_WEIGHT, WORKERS_MEMORY_BUDGET, workerPlan, type Executor, type Workers } from './pool';
import type { OpenedCalibration } from '../model/collector';
import type { InputStats } from '../model/stats';

/** The two phases' working sets together may take this much (the statistics G, the hidden
 *  states and the process's own ~0.15 GB come on top: a 7B run's 2 GB bound). */
export const PHASES_MEMORY_BUDGET = WORKERS_MEMORY_BUDGET;

export interface PhaseSizes {
  /** Weights of the run's largest matrix. */
  largest: number;
  /** Its larger dimension (a 7B model's MLP width). */
  widest: number;
  /** Worker threads running matrix jobs. */
  workers: number;
  /** Calibration tokens the pass carries through each layer. */
  tokens: number;
}

/** Bytes the jobs keep between layers: each worker's buffers for the largest matrix. */
export const jobsBytes = (s: PhaseSizes): number => s.workers * NATIVE_WORKER_BYTES_PER_WEIGHT * s.largest;

/** Bytes the pass keeps between layers (model/forward.ts), estimated from the shapes: its
 *  largest linear group — gate and up, two of the largest matrix — as BF16 weights and in the
 *  native module's packed bf16 copy (8 bytes a weight); the MLP's gate|up output and activation
 *  in float32 and the activation's bf16 copy for the down product (14 bytes a token and MLP
 *  column); the normed states, the attention's output and a linear output (12 bytes a token
 *  and hidden column; the hidden width is the largest matrix's other side). At 7B shapes and
 *  4096 tokens 1.19 GB, where the pass was measured holding 0.85 GB of buffers and 0.49 GB of
 *  native cache (2026-12-07). */
export const passBytes = (s: PhaseSizes): number =>
  8 * s.largest + 14 * s.tokens * s.widest + 12 * s.tokens * Math.floor(s.largest / s.widest);

/** Whether the phases must give their pages back at each hand-off. */
export function discardBetweenPhases(s: PhaseSizes): boolean {
  return jobsBytes(s) + passBytes(s) > PHASES_MEMORY_BUDGET;
}

/** Whether a calibrated run over matrices of these [rows, cols] shapes gives pages back at each
 *  hand-off: on the native backend (the only one that can), when the phases would not fit. */
export async function discardsBetweenPhases(o: {
  workers: Workers | undefined;
  shapes: readonly (readonly number[])[];
  tokens: number;
  backend: BackendChoice;
}): Promise<boolean> {
  const name = await backendName(o.backend);
  if (name !== 'native' || o.shapes.length === 0) return false;
  const largest = Math.max(...o.shapes.map(([r, c]) => r * c));
  const widest = Math.max(...o.shapes.map(([r, c]) => Math.max(r, c)));
  const workers = o.workers === 'in-thread' ? 1 : workerPlan(o.workers, o.shapes.length, largest, name).workers;
  return discardBetweenPhases({ largest, widest, workers, tokens: o.tokens });
}

/** Runs a calibration stream (each layer's statistics to `onLayer`, the pass waiting for it)
 *  with the hand-offs the phases need: where they would not fit together, the pass gives its
 *  pages back before each onLayer and the workers theirs after it (but the last layer's: the
 *  run ends there anyway). */
export async function streamLayers(
  stream: NonNullable<OpenedCalibration['stream']>,
  sizes: Parameters<typeof discardsBetweenPhases>[0],
  executor: () => Executor | undefined,
  onLayer: (stats: InputStats, layer: number, layers: number) => Promise<void>,
  signal?: AbortSignal,
): Promise<void> {
  const discard = await discardsBetweenPhases(sizes);
  await stream(
    async (stats, layer, layers) => {
      await onLayer(stats, layer, layers);
      if (discard && layer < layers) await executor()?.trim();
    },
    signal,
    { discardBetweenLayers: discard },
  );
}
