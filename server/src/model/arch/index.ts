// The architecture table: every model_type the forward pass runs, and the family file that
// describes it. Adding a family is one file in this folder, one line here and its fixture test
// (test/unit/arch-*.test.ts against transformers' log-probabilities).

import { gemma } from './gemma';
import { gemma2 } from './gemma2';
import { llama } from './llama';
import { phi } from './phi';
import { phi3 } from './phi3';
import type { Architecture } from './types';

export const ARCHITECTURES: readonly Architecture[] = [llama, gemma, gemma2, phi, phi3];

/** Every supported model_type, in table order. */
export const SUPPORTED_MODEL_TYPES: readonly string[] = ARCHITECTURES.flatMap((a) => a.modelTypes);

export function architectureOf(modelType: string): Architecture | undefined {
  return ARCHITECTURES.find((a) => a.modelTypes.includes(modelType));
}
