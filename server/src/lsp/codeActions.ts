// Quick fixes on the plan file: quantize matrices at another width, raise or lower a
// rank, drop a dead override, and apply a mixed-precision plan within the budget. Each
// is a WorkspaceEdit built with jsonc-parser's `modify`, so formatting and comments stay.

import { CodeAction, CodeActionKind, CodeActionParams, Diagnostic, TextEdit } from 'vscode-languageserver';
import { quantizerSpec } from '../registry';
import { gridShapeProblem } from '../quant/grid';
import type { PlanOverride } from '../protocol/lsp_ext';
import type { JsonPath } from '../plan/planfile';
import { compileGlob, globMatches } from '../plan/glob';
import { describeMatrices, globFor } from '../planInsight/describe';
import { Change, planEdits } from './edits';
import { pathAtOffset } from './jsonRanges';
import { mixedPlan } from './mixedPlan';
import { plannerUnavailable } from './planner';
import type { PlanDoc } from './planDoc';
import type { Owner } from '../planInsight/planModel';
import { SOURCE } from './diagnostics';
import { RELOAD_BLOCK, RELOAD_SAFE_BITS } from '../planInsight/reloadCheck';

interface WorstData {
  owner: Owner;
  names: string[];
  bits: number;
  betterBits?: number;
}
interface ReloadData {
  owner: Owner;
  names: string[];
  rises: boolean;
}
interface RankData {
  owner: Owner;
  maxRank: number;
  names: string[];
}

export async function planCodeActions(
  p: PlanDoc,
  params: CodeActionParams,
  disabledSupport = false,
): Promise<CodeAction[]> {
  const out: CodeAction[] = [];
  const add = (
    title: string,
    changes: Change[],
    diagnostics?: Diagnostic[],
    preferred = false,
    kind: string = CodeActionKind.QuickFix,
  ) => {
    if (out.some((a) => a.title === title)) return;
    const { edits } = planEdits(p.doc, changes);
    out.push({ title, kind, diagnostics, isPreferred: preferred || undefined, edit: { changes: { [p.uri]: edits } } });
  };
  const mine = params.context.diagnostics.filter((d) => d.source === SOURCE);
  for (const d of mine) {
    if (d.code === 'worst' && d.data) worstFixes(p, d, d.data as WorstData, add);
    else if (d.code === 'reload' && (d.data as ReloadData | undefined)?.rises)
      reloadFixes(p, d, d.data as ReloadData, add);
    else if (d.code === 'rank-too-large' && d.data) rankFix(p, d, d.data as RankData, add);
    else if (d.code === 'calibration' && (d.data as { moveTo?: string } | undefined)?.moveTo) {
      const to = (d.data as { moveTo: 'file' | 'imatrix' }).moveTo;
      const from = to === 'file' ? 'imatrix' : 'file';
      const value = p.parsed.plan.calibration?.[from];
      if (typeof value === 'string')
        add(
          `Give '${value}' as the calibration "${to}"`,
          [
            { path: ['calibration', from], value: undefined },
            { path: ['calibration', to], value },
          ],
          [d],
          true,
        );
    } else if (d.code === 'no-match' && d.data) {
      const j = (d.data as { jsonIndex: number }).jsonIndex;
      add(
        `Remove override '${p.parsed.plan.overrides?.[p.parsed.overrideIndex.indexOf(j)]?.match}'`,
        [{ path: ['overrides', j], value: undefined }],
        [d],
      );
    }
  }
  cursorFixes(p, params, add);
  const budget = p.parsed.plan.budget;
  if (budget && p.assignment) {
    const plan = await mixedPlan(p, budget);
    const budgetDiags = mine.filter((d) => d.code === 'budget' || d.code === 'planner');
    // On the budget, say why the planner's plan is not offered (LSP CodeAction.disabled), and how to get it.
    const byPlanner = plan?.description.startsWith('planner');
    const why = budgetDiags.length && !byPlanner ? await plannerUnavailable(p, budget) : undefined;
    if (why && disabledSupport)
      out.push({
        title: "Apply the planner's plan",
        kind: CodeActionKind.QuickFix,
        diagnostics: budgetDiags,
        disabled: { reason: why },
      });
    if (why && !p.facts.report?.raw.analyses?.length) {
      out.push({
        title: 'Analyze with LoftQ for the planner…',
        kind: CodeActionKind.QuickFix,
        diagnostics: budgetDiags,
        command: { title: 'Analyze with LoftQ', command: 'loftq.analyze', arguments: [p.uri] },
      });
    }
    if (plan && plan.newText !== p.text) {
      out.push({
        title: `Apply mixed-precision plan within budget: ${plan.description}`,
        kind: budgetDiags.length ? CodeActionKind.QuickFix : CodeActionKind.RefactorRewrite,
        diagnostics: budgetDiags.length ? budgetDiags : undefined,
        edit: { changes: { [p.uri]: [minimalEdit(p, plan.newText)] } },
      });
    }
  }
  return out;
}

type Add = (title: string, changes: Change[], diagnostics?: Diagnostic[], preferred?: boolean) => void;

/** The matrices an override decides, among the quantized ones. */
function coveredBy(p: PlanDoc, jsonIndex: number): string[] {
  const i = p.parsed.overrideIndex.indexOf(jsonIndex);
  const o = p.parsed.plan.overrides?.[i];
  if (!o || !p.assignment) return [];
  const g = compileGlob(o.match);
  return p.assignment.matrices.filter((m) => globMatches(g, m.tensor.name)).map((m) => m.tensor.name);
}

/** Edits the owner override in place when it covers exactly these matrices, else adds a narrower override after it. */
function setFor(p: PlanDoc, owner: Owner, names: string[], key: 'bits' | 'rank', value: number): Change[] {
  if (owner.kind === 'override') {
    const covered = coveredBy(p, owner.jsonIndex);
    if (covered.length === names.length && covered.every((n) => names.includes(n)))
      return [{ path: ['overrides', owner.jsonIndex, key], value }];
  }
  const universe = p.assignment?.tensors.map((t) => t.name) ?? names;
  const o: PlanOverride = { match: globFor(names, universe), [key]: value } as PlanOverride;
  return p.has(['overrides'])
    ? [{ path: ['overrides', -1], value: o, insert: true }]
    : [{ path: ['overrides'], value: [o] }];
}

function worstFixes(p: PlanDoc, d: Diagnostic, w: WorstData, add: Add) {
  const what = describeMatrices(w.names);
  if (w.betterBits)
    add(`Quantize ${what} at ${w.betterBits} bits`, setFor(p, w.owner, w.names, 'bits', w.betterBits), [d], true);
  const ms = p.assignment?.matrices.filter((m) => w.names.includes(m.tensor.name)) ?? [];
  if (!ms.length) return;
  const rank = ms[0].settings.rank;
  const cap = Math.min(...ms.map((m) => Math.min(...m.shape)));
  const raised = Math.min(rank * 2, cap);
  if (raised > rank) add(`Raise rank of ${what} to ${raised}`, setFor(p, w.owner, w.names, 'rank', raised), [d]);
}

/** Entries whose error rises on the NF4 reload: a width that survives it, or an HQQ export. */
function reloadFixes(p: PlanDoc, d: Diagnostic, r: ReloadData, add: Add) {
  const ms = p.assignment?.matrices.filter((m) => r.names.includes(m.tensor.name)) ?? [];
  if (!ms.length) return;
  const match =
    r.owner.kind === 'override'
      ? p.parsed.plan.overrides?.[p.parsed.overrideIndex.indexOf(r.owner.jsonIndex)]?.match
      : undefined;
  const what = match === undefined ? 'the defaults' : `'${match}'`;
  const offBlock = ms.some((m) => m.settings.blockSize !== RELOAD_BLOCK);
  // The node that decides their bits decides it for all its matrices, and no NF width but 2 and 4
  // survives: that node changes, not a narrower override of the matrices that happened to be listed.
  const at: JsonPath = r.owner.kind === 'override' ? ['overrides', r.owner.jsonIndex] : ['defaults'];
  for (const bits of RELOAD_SAFE_BITS) {
    const block = offBlock ? ` in blocks of ${RELOAD_BLOCK}` : '';
    add(
      `Quantize ${what} at ${bits} bits${block} (loads unchanged after the NF4 reload)`,
      [
        { path: [...at, 'bits'], value: bits },
        ...(offBlock ? [{ path: [...at, 'blockSize'], value: RELOAD_BLOCK }] : []),
      ],
      [d],
      bits === RELOAD_SAFE_BITS[0],
    );
  }
  // HQQ loads each module at its own bits: the whole plan moves to HQQ's grid, where its shapes allow.
  const planned = p.assignment!.matrices.filter((m) => !m.skipped);
  const ownQuantizer = (p.parsed.plan.overrides ?? []).some((o) => o.quantizer !== undefined);
  const hqqBits = quantizerSpec('hqq').bits;
  const packable = planned.every(
    (m) => hqqBits.includes(m.settings.bits) && !gridShapeProblem({ ...m.settings, quantizer: 'hqq' }, ...m.shape),
  );
  if (!ownQuantizer && packable && p.parsed.plan.format !== 'hqq')
    add(
      'Write an HQQ checkpoint instead ("quantizer": "hqq", "format": "hqq"): it loads at the planned bits',
      [
        { path: ['defaults', 'quantizer'], value: 'hqq' },
        { path: ['format'], value: 'hqq' },
      ],
      [d],
    );
}

function rankFix(p: PlanDoc, d: Diagnostic, r: RankData, add: Add) {
  const at = r.owner.kind === 'override' ? ['overrides', r.owner.jsonIndex, 'rank'] : ['defaults', 'rank'];
  if (p.has(at)) add(`Lower rank to ${r.maxRank}`, [{ path: at, value: r.maxRank }], [d], true);
  else
    add(
      `Lower rank of ${describeMatrices(r.names)} to ${r.maxRank}`,
      setFor(p, r.owner, r.names, 'rank', r.maxRank),
      [d],
      true,
    );
}

/** On an override without a diagnostic: quantize its matrices at each other width. */
function cursorFixes(p: PlanDoc, params: CodeActionParams, add: Add) {
  const at = pathAtOffset(p.text, p.root, p.doc.offsetAt(params.range.start));
  if (at.path[0] !== 'overrides' || typeof at.path[1] !== 'number') return;
  const j = at.path[1];
  const i = p.parsed.overrideIndex.indexOf(j);
  const o = p.parsed.plan.overrides?.[i];
  if (!o) return;
  const covered = coveredBy(p, j);
  if (!covered.length) return;
  const current = o.bits ?? p.assignment?.defaults.bits;
  for (const b of offeredWidths(p, covered))
    if (b !== current) add(`Quantize these matrices at ${b} bits`, [{ path: ['overrides', j, 'bits'], value: b }]);
}

/** The widths the matrices' quantizer has (those the analysis measured, when it did) that its
 *  grid can hold for every one of them (HQQ: those its loader can pack). */
function offeredWidths(p: PlanDoc, names: string[]): number[] {
  const matrices = p.assignment?.matrices.filter((m) => names.includes(m.tensor.name)) ?? [];
  const quantizer = matrices[0]?.settings.quantizer ?? p.assignment?.defaults.quantizer ?? 'nf';
  const own = quantizerSpec(quantizer).bits;
  const widths = p.facts.report?.bits.length ? p.facts.report.bits.filter((b) => own.includes(b)) : [...own];
  return widths.filter((b) => matrices.every((m) => !gridShapeProblem({ ...m.settings, bits: b }, ...m.shape)));
}

/** One TextEdit over the span where the texts differ. */
function minimalEdit(p: PlanDoc, next: string): TextEdit {
  const text = p.text;
  let a = 0;
  while (a < text.length && a < next.length && text[a] === next[a]) a++;
  let b = 0;
  while (b < text.length - a && b < next.length - a && text[text.length - 1 - b] === next[next.length - 1 - b]) b++;
  return { range: p.spanRange({ offset: a, length: text.length - a - b }), newText: next.slice(a, next.length - b) };
}
