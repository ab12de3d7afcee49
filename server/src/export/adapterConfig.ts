// adapter_config.json as PEFT writes it for LoftQ-initialised LoRA. lora_alpha = r (and
// alpha_pattern = rank_pattern), so PEFT's scale lora_alpha / r is 1 and Q + B·A as
// written reproduces the reported error.
// Every PEFT line from 0.10 on must load it the same way:
// - rank_pattern keys are written so that the matching rules before and after PEFT 0.15 pick the
//   same module (planner/peft.ts);
// - base_model_name_or_path is `..`, the folder above loftq_init/ that holds the backbone, never
//   the absolute path of the machine that ran it (a moved or shared folder would point nowhere);
// - no `loftq_config`: the adapters are plain LoRA weights (init_lora_weights true), and PEFT
//   ≥ 0.15 warns about loftq_config next to that on every load (0.20 removed its LoftQ
//   quantizer). Bits and iterations per matrix are recorded in loftq-report.json.

import type { MatrixReport } from '../protocol/lsp_ext';
import { moduleName } from '../plan/glob';
import { peftPatterns } from '../plan/planner/peft';

// By the architecture's suffix, first match wins: T5WithLMHeadModel (transformers' old name of
// T5ForConditionalGeneration) before the LMHeadModel of GPT-2 and its kin (GPT2LMHeadModel,
// OpenAIGPTLMHeadModel, BertLMHeadModel: decoders, causal LMs).
const TASK_TYPES: Record<string, string> = {
  WithLMHeadModel: 'SEQ_2_SEQ_LM',
  LMHeadModel: 'CAUSAL_LM',
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

/** Where adapter_config.json points PEFT for the base model: the backbone one folder up. */
export const ADAPTER_BASE = '..';

/** `modules`: every tensor name of the checkpoint, to keep rank_pattern keys unambiguous. */
export function adapterConfig(
  matrices: MatrixReport[],
  opts: { config?: { architectures?: string[] }; fanInFanOut: boolean; defaultRank: number; modules: string[] },
) {
  const done = matrices.filter((m) => !m.skipped);
  const patterns = peftPatterns(
    done.map((m) => ({ name: m.name, rank: m.rank, alpha: m.rank })),
    opts.defaultRank,
    opts.modules,
  );
  const targets = [...new Set(done.map((m) => moduleName(m.name).split('.').pop()!))].sort();
  return {
    peft_type: 'LORA',
    base_model_name_or_path: ADAPTER_BASE,
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
  };
}
