// PEFT's per-module LoRA settings for a mixed plan (adapter_config.json): `r`/`lora_alpha`
// hold the most common values; `rank_pattern`/`alpha_pattern` list the modules that differ.
//
// PEFT looks a module's name up among the pattern keys as a regular expression, and the rule
// changed in 0.15 (peft/utils/other.py, get_pattern_key; first matching key wins):
//   PEFT < 0.15:  re.match(rf".*\.{key}$", name)      — needs a dot before the key
//   PEFT ≥ 0.15:  re.match(rf"(.*\.)?({key})$", name) — the key may also be the whole name
// A key that is a module's full name therefore never matches before 0.15, and the module loads
// with the default rank (a size mismatch). We write the shortest proper suffix of the name (whole
// segments, dots escaped) that ends no other module's name and is no module's whole name: both
// rules then match exactly that one module, in this checkpoint and in any model that wraps it.

import { moduleName } from '../glob';

export interface PeftPatterns {
  r: number;
  lora_alpha: number;
  rank_pattern: Record<string, number>;
  alpha_pattern: Record<string, number>;
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Keys for `names` that both PEFT rules match to that module only, among `universe` (all module
 *  names of the model). A module with no such suffix (a one-segment name, or the tail of another
 *  module's name) gets its escaped full name, which only PEFT ≥ 0.15 matches: `keyable` is false. */
export function patternKeys(names: string[], universe: string[]): Map<string, { key: string; keyable: boolean }> {
  const whole = new Set(universe);
  for (const n of names) whole.add(n);
  // How many module names end in `.suffix`, for every proper suffix of every name.
  const endings = new Map<string, number>();
  for (const n of whole) {
    for (let i = n.indexOf('.'); i >= 0; i = n.indexOf('.', i + 1)) {
      const s = n.slice(i + 1);
      endings.set(s, (endings.get(s) ?? 0) + 1);
    }
  }
  const out = new Map<string, { key: string; keyable: boolean }>();
  for (const n of names) {
    let found: string | undefined;
    for (let i = n.lastIndexOf('.'); i >= 0; i = i === 0 ? -1 : n.lastIndexOf('.', i - 1)) {
      const s = n.slice(i + 1);
      if (endings.get(s) === 1 && !whole.has(s)) {
        found = s;
        break;
      }
    }
    out.set(n, found !== undefined ? { key: escapeRe(found), keyable: true } : { key: escapeRe(n), keyable: false });
  }
  return out;
}

function mode(values: number[], fallback: number): number {
  const count = new Map<number, number>();
  for (const v of values) count.set(v, (count.get(v) ?? 0) + 1);
  let best = fallback,
    n = count.get(fallback) ?? 0;
  for (const [v, c] of count)
    if (c > n) {
      best = v;
      n = c;
    }
  return best;
}

/**
 * `defaultRank` is kept as `r` unless another rank is more common, or unless modules that no key
 * can reach in PEFT < 0.15 (see patternKeys) all share one rank: then that rank is `r`, so every
 * PEFT line loads them. `lora_alpha` is the most common alpha among matrices at rank `r` (so the
 * usual alpha = r case needs no alpha_pattern there). `modules`: every module name of the model
 * (tensor names are accepted too), to check keys for ambiguity; the matrices themselves by default.
 */
export function peftPatterns(
  matrices: { name: string; rank: number; alpha: number }[],
  defaultRank: number,
  modules?: string[],
): PeftPatterns {
  const names = matrices.map((m) => moduleName(m.name));
  const keys = patternKeys(names, (modules ?? []).map(moduleName));
  const unkeyable = matrices.filter((m) => !keys.get(moduleName(m.name))!.keyable);
  const unkeyableRanks = new Set(unkeyable.map((m) => m.rank));
  const r =
    unkeyableRanks.size === 1
      ? [...unkeyableRanks][0]
      : mode(
          matrices.map((m) => m.rank),
          defaultRank,
        );
  const atR = matrices.filter((m) => m.rank === r).map((m) => m.alpha);
  const unkeyableAlphas = new Set(unkeyable.map((m) => m.alpha));
  const lora_alpha =
    unkeyableAlphas.size === 1 ? [...unkeyableAlphas][0] : mode(atR.length ? atR : matrices.map((m) => m.alpha), r);
  // Keys are module names from the checkpoint: no prototype, so `__proto__` is a key too.
  const rank_pattern: Record<string, number> = Object.create(null);
  const alpha_pattern: Record<string, number> = Object.create(null);
  for (const m of matrices) {
    const key = keys.get(moduleName(m.name))!.key;
    if (m.rank !== r) rank_pattern[key] = m.rank;
    if (m.alpha !== lora_alpha) alpha_pattern[key] = m.alpha;
  }
  // Object.fromEntries defines own properties (even `__proto__`) on an ordinary object.
  return {
    r,
    lora_alpha,
    rank_pattern: Object.fromEntries(Object.entries(rank_pattern)),
    alpha_pattern: Object.fromEntries(Object.entries(alpha_pattern)),
  };
}
