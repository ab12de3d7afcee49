// PEFT's per-module LoRA settings for a mixed plan (adapter_config.json): `r`/`lora_alpha`
// hold the most common values; `rank_pattern`/`alpha_pattern` list the modules that differ.
// PEFT matches a pattern key against a module's full name with `(.*\.)?key$` as a regular
// expression, so keys are module names with dots escaped — a key matches only its own module.

import { moduleName } from '../glob';

export interface PeftPatterns {
  r: number;
  lora_alpha: number;
  rank_pattern: Record<string, number>;
  alpha_pattern: Record<string, number>;
}

export function patternKey(tensorName: string): string {
  return moduleName(tensorName).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function mode(values: number[], fallback: number): number {
  const count = new Map<number, number>();
  for (const v of values) count.set(v, (count.get(v) ?? 0) + 1);
  let best = fallback, n = count.get(fallback) ?? 0;
  for (const [v, c] of count) if (c > n) { best = v; n = c; }
  return best;
}

/**
 * `defaultRank` is kept as `r` unless another rank is more common. `lora_alpha` is the most
 * common alpha among matrices at rank `r` (so the usual alpha = r case needs no alpha_pattern there).
 */
export function peftPatterns(matrices: { name: string; rank: number; alpha: number }[], defaultRank: number): PeftPatterns {
  const r = mode(matrices.map((m) => m.rank), defaultRank);
  const atR = matrices.filter((m) => m.rank === r).map((m) => m.alpha);
  const lora_alpha = mode(atR.length ? atR : matrices.map((m) => m.alpha), r);
  const rank_pattern: Record<string, number> = {};
  const alpha_pattern: Record<string, number> = {};
  for (const m of matrices) {
    if (m.rank !== r) rank_pattern[patternKey(m.name)] = m.rank;
    if (m.alpha !== lora_alpha) alpha_pattern[patternKey(m.name)] = m.alpha;
  }
  return { r, lora_alpha, rank_pattern, alpha_pattern };
}
