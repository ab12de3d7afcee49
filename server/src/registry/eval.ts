// `loftq eval`'s held-out tokens when none are given: sampled from the original model like
// `--calib-generate`, with a seed other than the calibration's, so the tokens an evaluation
// measures on are not the ones the calibration fitted to. The CLI (`loftq eval --generate`),
// `loftq/eval` and the editor's "Evaluate Model Outputs" read these.

import type { IntSpec } from './settings';
import { CALIBRATION_SPECS } from './settings';

export const EVAL_SPECS = {
  sequences: { ...CALIBRATION_SPECS.generateSequences, description: 'Held-out sequences to sample.' },
  length: { ...CALIBRATION_SPECS.generateLength, description: 'Tokens per held-out sequence.' },
  seed: { ...CALIBRATION_SPECS.generateSeed, description: 'Seed of the held-out sampler.' },
} as const satisfies Record<string, IntSpec>;

/** The held-out sampler's seed: the calibration sampler's plus one (mod 2³²), so the two
 *  never coincide; 1 when the run sampled nothing (the calibration default is 0). */
export function heldOutSeed(calibrationSeed: number | undefined): number {
  return ((calibrationSeed ?? CALIBRATION_SPECS.generateSeed.default) + 1) >>> 0;
}
