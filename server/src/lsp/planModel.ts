// What a plan does to a checkpoint: which matrices it quantizes, with which settings,
// and which JSON node (an override or the defaults) decides each matrix's bits and rank.
// Pure: no LSP, no I/O — the diagnostics, hovers and code actions share it.

import type { TensorInfo } from '../checkpoint';
import { DTYPE_SIZE } from '../checkpoint';
import { selectTargets } from '../engine/targets';
import { compileGlob, globMatches } from '../plan/glob';
import { compilePlan, JsonPath, ParsedPlan } from '../plan/planfile';
import type { MatrixSettings, PlanOverride } from '../protocol/lsp_ext';

/** The JSON node that decides a setting: an override (by its index in the file) or the defaults. */
export type Owner = { kind: 'defaults' } | { kind: 'override'; jsonIndex: number };

export interface MatrixPlan {
  tensor: TensorInfo;
  /** [out, in]. */
  shape: [number, number];
  settings: MatrixSettings;
  skipped: boolean;
  bitsOwner: Owner;
  rankOwner: Owner;
}

export interface PlanAssignment {
  matrices: MatrixPlan[];
  /** All tensors of the checkpoint (for "matches no tensor"). */
  tensors: TensorInfo[];
  defaults: MatrixSettings;
}

export function ownerKey(o: Owner): string {
  return o.kind === 'defaults' ? 'defaults' : `override:${o.jsonIndex}`;
}

export function assignMatrices(parsed: ParsedPlan, base: MatrixSettings, tensors: TensorInfo[]): PlanAssignment {
  const cp = compilePlan(parsed.plan, base);
  const matrices: MatrixPlan[] = [];
  for (const t of selectTargets(tensors, parsed.plan.targets)) {
    const settings = { ...cp.defaults };
    let skipped = false;
    let bitsOwner: Owner = { kind: 'defaults' }, rankOwner: Owner = { kind: 'defaults' };
    for (const { override, glob, index } of cp.overrides) {
      if (!globMatches(glob, t.name)) continue;
      const owner: Owner = { kind: 'override', jsonIndex: parsed.overrideIndex[index] };
      for (const k of ['bits', 'rank', 'iters', 'quantizer', 'blockSize'] as const) {
        if (override[k] !== undefined) (settings as Record<string, unknown>)[k] = override[k];
      }
      if (override.bits !== undefined) bitsOwner = owner;
      if (override.rank !== undefined) rankOwner = owner;
      if (override.skip !== undefined) skipped = override.skip;
    }
    matrices.push({ tensor: t, shape: [t.shape[0], t.shape[1]], settings, skipped, bitsOwner, rankOwner });
  }
  return { matrices, tensors, defaults: cp.defaults };
}

/** The plan's override entries with their file indices. */
export function overridesWithIndex(parsed: ParsedPlan): { override: PlanOverride; jsonIndex: number }[] {
  return (parsed.plan.overrides ?? []).map((override, i) => ({ override, jsonIndex: parsed.overrideIndex[i] }));
}

/** Tensors whose module name a glob matches (all tensors, not only quantized ones). */
export function tensorsMatching(pattern: string, tensors: TensorInfo[]): TensorInfo[] {
  const g = compileGlob(pattern);
  return tensors.filter((t) => globMatches(g, t.name));
}

/** The JSON path a diagnostic about an owner's `key` setting should point at. */
export function ownerPath(parsed: ParsedPlan, owner: Owner, key: 'bits' | 'rank', hasDefaultsNode: boolean, hasKey: (p: JsonPath) => boolean): JsonPath {
  if (owner.kind === 'override') {
    const p: JsonPath = ['overrides', owner.jsonIndex, key];
    return hasKey(p) ? p : ['overrides', owner.jsonIndex, 'match'];
  }
  if (hasKey(['defaults', key])) return ['defaults', key];
  return hasDefaultsNode ? ['defaults'] : ['checkpoint'];
}

// Sizes as stored with packed codes: `bits` per weight plus one float32 scale per block;
// the adapter (A: r×in, B: out×r) in the input's dtype. Untouched tensors keep their size.
export function backboneBytes(m: MatrixPlan): number {
  if (m.skipped) return m.tensor.byteLength;
  const p = m.tensor.parameters;
  return Math.ceil((p * m.settings.bits) / 8) + Math.ceil(p / m.settings.blockSize) * 4;
}

export function adapterBytes(m: MatrixPlan): number {
  if (m.skipped) return 0;
  const size = DTYPE_SIZE[m.tensor.dtype] ?? 4;
  return m.settings.rank * (m.shape[0] + m.shape[1]) * size;
}

export interface PlanTotals {
  /** Parameter-weighted mean bits over the targeted matrices (skipped ones at their dtype width). */
  avgBits: number;
  backboneBytes: number;
  adapterBytes: number;
  quantizedParameters: number;
}

export function planTotals(a: PlanAssignment): PlanTotals {
  const quantized = new Set(a.matrices.map((m) => m.tensor.name));
  let bitsParams = 0, params = 0, backbone = 0, adapter = 0;
  for (const m of a.matrices) {
    backbone += backboneBytes(m);
    adapter += adapterBytes(m);
    // A skipped matrix stays at its stored width, which the budget has to pay for.
    const bits = m.skipped ? (DTYPE_SIZE[m.tensor.dtype] ?? 4) * 8 : m.settings.bits;
    bitsParams += bits * m.tensor.parameters;
    params += m.tensor.parameters;
  }
  for (const t of a.tensors) if (!quantized.has(t.name)) backbone += t.byteLength;
  return { avgBits: params ? bitsParams / params : 0, backboneBytes: backbone, adapterBytes: adapter, quantizedParameters: params };
}
