// Human wording for groups of matrices ("down_proj of layers 28–31"), numbers and sizes,
// and the inverse: a compact glob that selects exactly a given set of matrices.

import { compileGlob, globMatches, moduleName } from '../plan/glob';

export interface NameParts {
  module: string;
  /** Segments before the layer index (joined), or the whole name when there is none. */
  prefix: string;
  layer?: number;
  /** Segments after the layer index (joined). */
  suffix: string;
  /** The last segment: q_proj, down_proj, c_attn, … */
  kind: string;
}

export function nameParts(tensorName: string): NameParts {
  const module = moduleName(tensorName);
  const segs = module.split('.');
  const kind = segs[segs.length - 1];
  const i = segs.findIndex((s) => /^\d+$/.test(s));
  if (i < 0) return { module, prefix: module, suffix: '', kind };
  return {
    module,
    prefix: segs.slice(0, i).join('.'),
    layer: Number(segs[i]),
    suffix: segs.slice(i + 1).join('.'),
    kind,
  };
}

/** "0–3, 5, 7–8" */
export function formatRanges(nums: number[]): string {
  const s = [...new Set(nums)].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < s.length;) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j] + 1) j++;
    out.push(j === i ? `${s[i]}` : `${s[i]}–${s[j]}`);
    i = j + 1;
  }
  return out.join(', ');
}

/** "down_proj of layers 28–31", "q_proj, k_proj of layer 0", "lm_head". */
export function describeMatrices(names: string[]): string {
  const parts = names.map(nameParts);
  if (parts.length === 1 && parts[0].layer === undefined) return parts[0].module;
  const kinds = [...new Set(parts.map((p) => p.kind))];
  const layers = parts.filter((p) => p.layer !== undefined).map((p) => p.layer!);
  const what = kinds.length <= 3 ? kinds.join(', ') : `${parts.length} matrices`;
  if (!layers.length) return kinds.length <= 3 ? what : `${parts.length} matrices`;
  const distinct = new Set(layers).size;
  return `${what} of layer${distinct === 1 ? '' : 's'} ${formatRanges(layers)}`;
}

export function formatError(x: number): string {
  return x.toFixed(2);
}

/** "0.47–0.52" or "0.47" when both ends round the same. */
export function formatErrorRange(values: number[]): string {
  const lo = formatError(Math.min(...values)),
    hi = formatError(Math.max(...values));
  return lo === hi ? lo : `${lo}–${hi}`;
}

export function formatBytes(n: number): string {
  const a = Math.abs(n);
  if (a >= 1e9) return `${(n / 1e9).toFixed(1)} GB`;
  if (a >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (a >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

function bracesFor(layers: number[]): string {
  const s = [...new Set(layers)].sort((a, b) => a - b);
  if (s.length === 1) return String(s[0]);
  const contiguous = s[s.length - 1] - s[0] === s.length - 1;
  return contiguous ? `{${s[0]}..${s[s.length - 1]}}` : `{${s.join(',')}}`;
}

/**
 * A glob selecting exactly `names` among `universe` (tensor names): `prefix.{0..3}.suffix`
 * when the names differ only by layer, `prefix.{0..3}.{a,b}` when they form a full grid,
 * else the alternatives of the module names.
 */
export function globFor(names: string[], universe: string[]): string {
  const parts = names.map(nameParts);
  const want = new Set(names.map(moduleName));
  const exact = (g: string) => {
    const c = compileGlob(g);
    const hit = universe.filter((u) => globMatches(c, u)).map(moduleName);
    return hit.length === want.size && hit.every((h) => want.has(h));
  };
  const candidates: string[] = [];
  if (parts.length === 1) candidates.push(parts[0].module);
  const prefixes = new Set(parts.map((p) => p.prefix));
  if (prefixes.size === 1 && parts.every((p) => p.layer !== undefined)) {
    const prefix = parts[0].prefix;
    const suffixes = [...new Set(parts.map((p) => p.suffix))];
    const layers = bracesFor(parts.map((p) => p.layer!));
    const tail = suffixes.length === 1 ? suffixes[0] : `{${suffixes.join(',')}}`;
    candidates.push(tail ? `${prefix}.${layers}.${tail}` : `${prefix}.${layers}`);
  }
  candidates.push(parts.length === 1 ? parts[0].module : `{${[...want].join(',')}}`);
  for (const c of candidates) if (exact(c)) return c;
  return candidates[candidates.length - 1];
}
