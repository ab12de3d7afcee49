// adapter_config.json as PEFT writes it for LoftQ-initialised LoRA. lora_alpha = r (and
// alpha_pattern = rank_pattern), so PEFT's scale lora_alpha / r is 1 and Q + B·A as
// written reproduces the reported error.

import type { MatrixReport } from '../protocol/lsp_ext';
import { moduleName } from '../plan/glob';
import { peftPatterns } from '../plan/planner/peft';

const TASK_TYPES: Record<string, string> = {
  ForCausalLM: 'CAUSAL_LM',
  ForSeq2SeqLM: 'SEQ_2_SEQ_LM',
  ForConditionalGeneration: 'SEQ_2_SEQ_LM',
  ForSequenceClassification: 'SEQ_CLS',
  ForTokenClassification: 'TOKEN_CLS',
  ForQuestionAnswering: 'QUESTION_ANS',
};

export function taskTypeOf(config: { architectures?: string[] } | undefined): string | null {
  const arch = config?.architectures?.[0] ?? '';
  for (const [suffix, task] of Object.entries(TASK_TYPES)) if (arch.endsWith(suffix)) return task;
  return null;
}

export function adapterConfig(matrices: MatrixReport[], opts: { base: string; config?: { architectures?: string[] }; fanInFanOut: boolean; defaultRank: number }) {
  const done = matrices.filter((m) => !m.skipped);
  const patterns = peftPatterns(done.map((m) => ({ name: m.name, rank: m.rank, alpha: m.rank })), opts.defaultRank);
  const targets = [...new Set(done.map((m) => moduleName(m.name).split('.').pop()!))].sort();
  const bits = [...new Set(done.map((m) => m.bits))];
  const iters = [...new Set(done.map((m) => m.iters))];
  return {
    peft_type: 'LORA',
    base_model_name_or_path: opts.base,
    task_type: taskTypeOf(opts.config),
    r: patterns.r,
    lora_alpha: patterns.lora_alpha,
    rank_pattern: patterns.rank_pattern,
    alpha_pattern: patterns.alpha_pattern,
    target_modules: targets,
    lora_dropout: 0,
    bias: 'none',
    fan_in_fan_out: opts.fanInFanOut,
    init_lora_weights: true,
    inference_mode: false,
    loftq_config: { loftq_bits: bits.length === 1 ? bits[0] : Math.min(...bits), loftq_iter: iters.length === 1 ? iters[0] : Math.max(...iters) },
  };
}
