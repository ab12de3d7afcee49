// What a plan does to a checkpoint: which matrices it quantizes, with which settings,
// and which JSON node (an override or the defaults) decides each matrix's bits and rank.
// Pure: no LSP, no I/O — the diagnostics, hovers and code actions share it.

import type { TensorInfo } from '../checkpoint';
import { selectTargets } from '../engine/targets';
import { compileGlob, globMatches } from '../plan/glob';
import { compilePlan, JsonPath, ParsedPlan, resolveSettings } from '../plan/planfile';
import type { MatrixSettings, PlanOverride } from '../protocol/lsp_ext';
import {
  adapterBytesOf,
  avgBitsOf,
  backboneChoiceBytes,
  choiceBytes,
  CostModel,
  DEFAULT_COST,
  loraBytes,
  storageOf,
} from '../plan/planner/cost';

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
  const ownerOf = (i: number | undefined): Owner =>
    i === undefined ? { kind: 'defaults' } : { kind: 'override', jsonIndex: parsed.overrideIndex[i] };
  const matrices: MatrixPlan[] = selectTargets(tensors, parsed.plan.targets).map((t) => {
    const { settings, skipped, owners } = resolveSettings(cp, t.name);
    const shape: [number, number] = [t.shape[0], t.shape[1]];
    return { tensor: t, shape, settings, skipped, bitsOwner: ownerOf(owners.bits), rankOwner: ownerOf(owners.rank) };
  });
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
export function ownerPath(
  parsed: ParsedPlan,
  owner: Owner,
  key: 'bits' | 'rank',
  hasDefaultsNode: boolean,
  hasKey: (p: JsonPath) => boolean,
): JsonPath {
  if (owner.kind === 'override') {
    const p: JsonPath = ['overrides', owner.jsonIndex, key];
    return hasKey(p) ? p : ['overrides', owner.jsonIndex, 'match'];
  }
  if (hasKey(['defaults', key])) return ['defaults', key];
  return hasDefaultsNode ? ['defaults'] : ['checkpoint'];
}

// Sizes with the planner's cost model (plan/planner/cost.ts, docs/planner.md), so the
// editor, `loftq plan` and the budget agree: codes ⌈n·bits/8⌉, double-quantized scales,
// adapters r·(out+in) in the checkpoint's float width. Untouched tensors keep their size.
export function costModelOf(m: MatrixPlan): CostModel {
  return {
    ...DEFAULT_COST,
    blockSize: m.settings.blockSize,
    scales: storageOf(m.settings.quantizer),
    adapterBytes: adapterBytesOf(m.tensor.dtype),
  };
}

export function backboneBytes(m: MatrixPlan): number {
  if (m.skipped) return m.tensor.byteLength;
  return backboneChoiceBytes(m.shape[0], m.shape[1], m.settings.bits, costModelOf(m));
}

export function adapterBytes(m: MatrixPlan): number {
  return m.skipped ? 0 : loraBytes(m.shape[0], m.shape[1], m.settings.rank, costModelOf(m));
}

export interface PlanTotals {
  /** Parameter-weighted mean of the `bits` setting over the quantized matrices. */
  avgBits: number;
  /** Whole backbone: quantized matrices (codes + scales) and every other tensor as stored. */
  backboneBytes: number;
  adapterBytes: number;
  /** What a byte budget counts (the planner's accounting): codes + scales + adapters of the quantized matrices. */
  budgetBytes: number;
  /** Codes + scales of the quantized matrices: what an average-bit budget counts. */
  quantizedBackboneBytes: number;
  /** 8 · quantizedBackboneBytes / quantizedParameters: backbone bits per weight, as papers quote them. */
  backboneBits: number;
  quantizedParameters: number;
}

export function planTotals(a: PlanAssignment): PlanTotals {
  const quantized = new Set(a.matrices.map((m) => m.tensor.name));
  let bitsParams = 0,
    params = 0,
    backbone = 0,
    adapter = 0,
    budget = 0,
    quantizedBackbone = 0;
  for (const m of a.matrices) {
    backbone += backboneBytes(m);
    adapter += adapterBytes(m);
    // Skipped matrices are outside the plan on both sides of the budget, as in `loftq plan`.
    if (m.skipped) continue;
    budget += choiceBytes(m.shape[0], m.shape[1], m.settings.bits, m.settings.rank, costModelOf(m));
    quantizedBackbone += backboneBytes(m);
    bitsParams += m.settings.bits * m.tensor.parameters;
    params += m.tensor.parameters;
  }
  for (const t of a.tensors) if (!quantized.has(t.name)) backbone += t.byteLength;
  return {
    avgBits: params ? bitsParams / params : 0,
    backboneBytes: backbone,
    adapterBytes: adapter,
    budgetBytes: budget,
    quantizedBackboneBytes: quantizedBackbone,
    backboneBits: avgBitsOf(quantizedBackbone, params),
    quantizedParameters: params,
  };
}
