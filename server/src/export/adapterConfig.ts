// adapter_config.json as PEFT writes it for LoftQ-initialised LoRA. lora_alpha = r (and
// alpha_pattern = rank_pattern), so PEFT's scale lora_alpha / r is 1 and Q + B·A as
// written reproduces the reported error.
// Every PEFT line from 0.10 on must load it the same way:
// - rank_pattern keys are written so that the matching rules before and after PEFT 0.15 pick the
//   same module (planner/peft.ts);
// - target_modules is one regular expression over full module names (targetModulesRegex), which
//   every line fullmatches against each module name: exactly the adapted modules are wrapped. A
//   list of bare suffixes (q_proj, …) also wrapped a module the plan skipped with a fresh adapter
//   that would be trained (PEFT ≥ 0.15 then warns "missing adapter keys"); `exclude_modules` only
//   exists from PEFT 0.14;
// - base_model_name_or_path is the output folder's absolute path (PEFT's own convention): a
//   relative `..` was resolved by transformers against the working directory, so loading from
//   elsewhere failed or silently took whatever model sat in the working directory's parent. A
//   moved folder is loaded with PeftModel.from_pretrained(base, DIR/loftq_init), which ignores it;
// - no `loftq_config`: the adapters are plain LoRA weights (init_lora_weights true), and PEFT
//   ≥ 0.15 warns about loftq_config next to that on every load (0.20 removed its LoftQ
//   quantizer). Bits and iterations per matrix are recorded in loftq-report.json.

import * as path from 'node:path';
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

/** `s` as a literal in a Python (and JavaScript) regular expression: ASCII punctuation escaped. */
function literal(s: string): string {
  return s.replace(/[^\w\u0080-\uffff]/g, '\\$&');
}

/** One regular expression that fullmatches exactly `modules` (full module names). Names are
 *  factored at their first numeric segment — PREFIX.N.SUFFIX — so a model's layers cost one
 *  alternation of layer numbers per group of suffixes that share them:
 *  `model\.layers\.(?:0|1|3)\.(?:self_attn\.o_proj)|model\.layers\.(?:0|1|2|3)\.(?:mlp\.down_proj|…)`. */
export function targetModulesRegex(modules: readonly string[]): string {
  const bySuffix = new Map<string, { prefix: string; suffix: string; layers: Set<string> }>();
  const plain: string[] = [];
  for (const m of [...new Set(modules)].sort(naturalCompare)) {
    const parts = m.split('.');
    const i = parts.findIndex((p) => /^\d+$/.test(p));
    if (i < 0) {
      plain.push(literal(m));
      continue;
    }
    const prefix = parts.slice(0, i).join('.'),
      suffix = parts.slice(i + 1).join('.');
    const key = JSON.stringify([prefix, suffix]);
    const g = bySuffix.get(key) ?? { prefix, suffix, layers: new Set<string>() };
    g.layers.add(parts[i]);
    bySuffix.set(key, g);
  }
  // Suffixes that share a prefix and the same layer numbers become one alternative.
  const byLayers = new Map<string, { prefix: string; layers: string[]; suffixes: string[] }>();
  for (const g of bySuffix.values()) {
    const layers = [...g.layers];
    const key = JSON.stringify([g.prefix, layers]);
    const h = byLayers.get(key) ?? { prefix: g.prefix, layers, suffixes: [] };
    h.suffixes.push(g.suffix);
    byLayers.set(key, h);
  }
  const part = (xs: string[]) => xs.map(literal).join('|');
  const grouped = [...byLayers.values()].map(({ prefix, layers, suffixes }) => {
    const head = prefix === '' ? '' : `${literal(prefix)}\\.`;
    const tail = suffixes.every((x) => x === '') ? '' : `\\.(?:${part(suffixes)})`;
    return `${head}(?:${layers.join('|')})${tail}`;
  });
  return [...grouped, ...plain].join('|');
}

function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/** `modules`: every tensor name of the checkpoint, to keep rank_pattern keys unambiguous; `out`:
 *  the output folder (absolute), where the backbone is. */
export function adapterConfig(
  matrices: MatrixReport[],
  opts: {
    config?: { architectures?: string[] };
    fanInFanOut: boolean;
    defaultRank: number;
    modules: string[];
    out: string;
  },
) {
  const done = matrices.filter((m) => !m.skipped);
  const patterns = peftPatterns(
    done.map((m) => ({ name: m.name, rank: m.rank, alpha: m.rank })),
    opts.defaultRank,
    opts.modules,
  );
  const targets = targetModulesRegex(done.map((m) => moduleName(m.name)));
  return {
    peft_type: 'LORA',
    base_model_name_or_path: path.resolve(opts.out),
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
