// Which tensors LoftQ quantizes: 2-D float weights whose module name matches a target.
// The default targets cover Llama/Mistral/Qwen, GPT-2, BERT/DeBERTa/RoBERTa and BART/T5
// linear layers; embeddings, norms, biases and lm_head are copied unless targeted.

import { compileGlob, globMatches, CompiledGlob } from '../plan/glob';
import { FLOAT_DTYPES, quote, TensorInfo } from '../checkpoint';
import { UsageError } from '../base/errors';

export const DEFAULT_TARGETS = [
  'q_proj',
  'k_proj',
  'v_proj',
  'o_proj',
  'gate_proj',
  'up_proj',
  'down_proj',
  // Phi-3's fused projections: quantized (and targeted by PEFT) under their own names.
  'qkv_proj',
  'gate_up_proj',
  'c_attn',
  'c_proj',
  'c_fc',
  'query',
  'key',
  'value',
  'dense',
  'query_proj',
  'key_proj',
  'value_proj',
  'q',
  'k',
  'v',
  'o',
  'fc1',
  'fc2',
  'out_proj',
  'wi',
  'wo',
  'wi_0',
  'wi_1',
];

/** A bad pattern (unbalanced braces, a range or alternatives over the limits) is a UsageError naming it. */
export function compileTargets(patterns: string[] = DEFAULT_TARGETS): CompiledGlob[] {
  return patterns.map((p) => {
    try {
      return compileGlob(p);
    } catch (e) {
      if (e instanceof SyntaxError) throw new UsageError(`target '${quote(p)}': bad pattern: ${e.message}`);
      throw e;
    }
  });
}

export function isQuantizable(t: TensorInfo): boolean {
  return (
    t.shape.length === 2 && t.shape[0] > 0 && t.shape[1] > 0 && FLOAT_DTYPES.has(t.dtype) && t.name.endsWith('.weight')
  );
}

export function selectTargets(tensors: TensorInfo[], patterns?: string[]): TensorInfo[] {
  const globs = compileTargets(patterns);
  return tensors.filter((t) => isQuantizable(t) && globs.some((g) => globMatches(g, t.name)));
}
