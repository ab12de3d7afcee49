// How much the model's output moves per unit of one linear layer's output error: the planner's
// exchange rate between matrices (docs/planner.md, "Output terms").
//
// Calibrated LoftQ measures each matrix's error in its own output space, ‖(W − Q − B·A)·S‖². Those
// spaces are not comparable: a q_proj output feeds a softmax, an o_proj output the residual stream
// directly, and an error in layer 0 passes through every later layer. On stories260K the KL of
// the model with one matrix quantized, divided by that matrix's output error, spans three decades
// across the 35 matrices. The probe measures that rate per matrix: quantize(W) of this matrix
// alone (its QLoRA init, no adapter), the model run over calibration tokens, KL(original ‖ probed)
// per token. Second order, KL ≈ ½·δᵀ·F·δ is proportional to the squared output perturbation, so
// gain = KL / ‖(W − quantize(W))·S‖² turns any output error of that matrix into nats.

import type { Checkpoint } from '../checkpoint/checkpoint';
import { throwIfAborted } from '../base/errors';
import type { MatmulBackend } from '../linalg/backend';
import type { MatrixSettings } from '../protocol/lsp_ext';
import { quantizeValues } from '../quant/grid';
import type { ModelConfig } from './config';
import { ComparisonMeter } from './evalMetrics';
import { runForward } from './forward';

/** One matrix to probe, on the grid of these settings (its checkpoint dtype for HQQ). */
export interface SensitivityProbe {
  name: string;
  settings: Pick<MatrixSettings, 'quantizer' | 'bits' | 'blockSize'>;
  dtype: string;
}

/** Calibration tokens the probes run over (whole sequences from the start of the set, the last
 *  one cut): 1 + |probes| forward passes, so fewer than the statistics use. */
export const PROBE_TOKENS = 512;

export function probeSequences(sequences: readonly (readonly number[])[]): number[][] {
  const out: number[][] = [];
  let left = PROBE_TOKENS;
  for (const s of sequences) {
    if (left < 2) break;
    const piece = s.slice(0, left);
    if (piece.length >= 2) out.push([...piece]);
    left -= piece.length;
  }
  return out;
}

export interface ProbeOptions {
  backend: MatmulBackend;
  signal?: AbortSignal;
  onProbe?(index: number, total: number, name: string): void;
}

/** Mean KL(original ‖ model with probe.name quantized) in nats per token, per probe. */
export async function probeSensitivities(
  ck: Checkpoint,
  c: ModelConfig,
  sequences: readonly (readonly number[])[],
  probes: readonly SensitivityProbe[],
  opts: ProbeOptions,
): Promise<Map<string, number>> {
  const original: Float32Array[] = [];
  await runForward(ck, c, sequences, {
    backend: opts.backend,
    signal: opts.signal,
    onLogits: (k, logits) => void (original[k] = logits.slice()),
  });
  const kl = new Map<string, number>();
  for (let i = 0; i < probes.length; i++) {
    throwIfAborted(opts.signal);
    const p = probes[i];
    opts.onProbe?.(i, probes.length, p.name);
    const meter = new ComparisonMeter(c.vocabSize);
    await runForward(ck, c, sequences, {
      backend: opts.backend,
      signal: opts.signal,
      hooks: { weight: (name, w) => (name === p.name ? quantizeValues(w, p.settings, p.dtype) : undefined) },
      onLogits: (k, logits) => meter.addSequence(sequences[k], original[k], logits),
    });
    kl.set(p.name, meter.summary(1).kl);
  }
  return kl;
}
