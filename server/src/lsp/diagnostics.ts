// Diagnostics of a plan file, each at the JSON node it is about: structure (parsePlan),
// the checkpoint, override patterns, impossible ranks, the budget, and — once a report
// exists — the worst matrices per override / defaults plus a summary on the checkpoint,
// the planner's prediction next to this plan's (on `budget`), and the NF4 reload check.
// Squiggles (Error, Warning) only for what needs action, each with its quick fix where one
// exists; what is only information (the summary, a budget met, worst matrices below the
// threshold, a plan as good as the planner's, an error the reload lowers) is a Hint: no
// squiggle, the message on hover.

import * as path from 'node:path';
import { CodeLens, Diagnostic, DiagnosticSeverity } from 'vscode-languageserver';
import type { JsonPath } from '../plan/planfile';
import { compileGlob, globMatches } from '../plan/glob';
import { describeMatrices, formatBytes, formatError } from '../planInsight/describe';
import type { PlanDoc } from './planDoc';
import {
  MatrixPlan,
  ownerKey,
  ownerPath,
  overridesWithIndex,
  planTotals,
  tensorsMatching,
  Owner,
} from '../planInsight/planModel';
import { meanError, worstGroups } from '../planInsight/worst';
import { fitsBudget } from '../planInsight/firstK';
import type { SpanPart } from './jsonRanges';
import { reloadGroups } from '../planInsight/reloadCheck';
import { formatProblem } from '../registry';
import { gridShapeProblem } from '../quant/grid';

export const SOURCE = 'loftq';

export type DiagCode =
  | 'plan'
  | 'checkpoint'
  | 'no-match'
  | 'rank-too-large'
  | 'format'
  | 'worst'
  | 'summary'
  | 'budget'
  | 'report'
  | 'planner'
  | 'reload'
  | 'calibration';

/** Below this share of the plan's predicted error, the planner's plan is worth a warning. */
export const PLANNER_WARN_RATIO = 0.9;

function diag(
  p: PlanDoc,
  severity: DiagnosticSeverity,
  code: DiagCode,
  message: string,
  at: JsonPath,
  part: SpanPart = 'value',
  data?: unknown,
): Diagnostic {
  return { range: p.range(at, part), severity, code, source: SOURCE, message, data };
}

export function planDiagnostics(p: PlanDoc, threshold: number): Diagnostic[] {
  const out: Diagnostic[] = [];
  for (const pr of p.parsed.problems) {
    const range =
      pr.offset !== undefined ? p.spanRange({ offset: pr.offset, length: pr.length ?? 0 }) : p.range(pr.path);
    out.push({
      range,
      severity: pr.severity === 'error' ? DiagnosticSeverity.Error : DiagnosticSeverity.Warning,
      code: 'plan',
      source: SOURCE,
      message: pr.message,
    });
  }
  for (const c of p.facts.calibration ?? [])
    out.push(
      diag(
        p,
        c.severity === 'error' ? DiagnosticSeverity.Error : DiagnosticSeverity.Warning,
        'calibration',
        c.message,
        c.path,
        'value',
        c.moveTo ? { moveTo: c.moveTo } : undefined,
      ),
    );
  const ck = p.facts.checkpoint;
  if (!ck || !p.parsed.plan.checkpoint) return out;
  if (!ck.ok) {
    out.push(diag(p, DiagnosticSeverity.Error, 'checkpoint', ck.message, ['checkpoint']));
    return out;
  }
  const a = p.assignment!;
  const ckName = path.basename(ck.path);
  overridesWithIndex(p.parsed).forEach(({ override, jsonIndex }) => {
    const hit = tensorsMatching(override.match, a.tensors);
    const at: JsonPath = ['overrides', jsonIndex, 'match'];
    if (!hit.length)
      out.push(
        diag(
          p,
          DiagnosticSeverity.Warning,
          'no-match',
          `'${override.match}' matches no tensor in ${ckName}`,
          at,
          'value',
          { jsonIndex },
        ),
      );
    else {
      const g = compileGlob(override.match);
      if (!a.matrices.some((m) => globMatches(g, m.tensor.name))) {
        out.push(
          diag(
            p,
            DiagnosticSeverity.Warning,
            'no-match',
            `'${override.match}' matches ${hit.length} tensor${hit.length === 1 ? '' : 's'} ` +
              'but none that is quantized (2-D linear weights among the targets)',
            at,
            'value',
            { jsonIndex },
          ),
        );
      }
    }
  });
  (p.parsed.plan.targets ?? []).forEach((t, i) => {
    if (!tensorsMatching(t, a.tensors).length)
      out.push(
        diag(p, DiagnosticSeverity.Warning, 'no-match', `target '${t}' matches no tensor in ${ckName}`, ['targets', i]),
      );
  });
  out.push(...rankDiagnostics(p, a.matrices));
  out.push(...formatDiagnostics(p, a.matrices));
  out.push(...budgetDiagnostics(p));
  out.push(...analysisDiagnostics(p, threshold));
  return out;
}

/** Where a problem about an owner's setting goes; a whole object or the checkpoint line gets its key. */
function ownerAt(p: PlanDoc, owner: Owner, key: 'bits' | 'rank'): [JsonPath, SpanPart] {
  const at = ownerPath(p.parsed, owner, key, p.has(['defaults']), (q) => p.has(q));
  return [at, at.length === 1 ? 'key' : 'value'];
}

function rankDiagnostics(p: PlanDoc, matrices: MatrixPlan[]): Diagnostic[] {
  const byOwner = new Map<string, { owner: Owner; rank: number; bad: MatrixPlan[] }>();
  for (const m of matrices) {
    if (m.skipped || m.settings.rank <= Math.min(...m.shape)) continue;
    const k = `${ownerKey(m.rankOwner)}`;
    const g = byOwner.get(k) ?? { owner: m.rankOwner, rank: m.settings.rank, bad: [] };
    g.bad.push(m);
    byOwner.set(k, g);
  }
  return [...byOwner.values()].map(({ owner, rank, bad }) => {
    const maxRank = Math.min(...bad.map((m) => Math.min(...m.shape)));
    const names = bad.map((m) => m.tensor.name);
    const count = `${bad.length} matri${bad.length === 1 ? 'x' : 'ces'}`;
    const msg = `rank ${rank} is larger than min(out, in) = ${maxRank} of ${describeMatrices(names)} (${count})`;
    return diag(p, DiagnosticSeverity.Error, 'rank-too-large', msg, ...ownerAt(p, owner, 'rank'), {
      owner,
      maxRank,
      names,
    });
  });
}

/** What the plan's format cannot store (at `format`), and HQQ shapes its loader cannot pack
 *  (at the node that sets their bits): the refusals `loftq quantize` would give, before a run. */
function formatDiagnostics(p: PlanDoc, matrices: MatrixPlan[]): Diagnostic[] {
  const out: Diagnostic[] = [];
  const planned = matrices.filter((m) => !m.skipped);
  const format = p.parsed.plan.format;
  if (format) {
    const bad = planned.filter((m) => formatProblem(format, m.settings.quantizer));
    if (bad.length) {
      const names = bad.map((m) => m.tensor.name);
      const msg =
        `format '${format}' ${formatProblem(format, bad[0].settings.quantizer)}: ` +
        `${describeMatrices(names)} (${bad.length} matri${bad.length === 1 ? 'x' : 'ces'})`;
      out.push(diag(p, DiagnosticSeverity.Error, 'format', msg, ['format']));
    }
  }
  const byOwner = new Map<string, { owner: Owner; problem: string; names: string[] }>();
  for (const m of planned) {
    const problem = gridShapeProblem(m.settings, m.shape[0], m.shape[1]);
    if (!problem) continue;
    const k = ownerKey(m.bitsOwner);
    const g = byOwner.get(k) ?? { owner: m.bitsOwner, problem, names: [] };
    g.names.push(m.tensor.name);
    byOwner.set(k, g);
  }
  for (const { owner, problem, names } of byOwner.values())
    out.push(
      diag(
        p,
        DiagnosticSeverity.Error,
        'format',
        `${describeMatrices(names)} (${names.length}): ${problem}`,
        ...ownerAt(p, owner, 'bits'),
      ),
    );
  return out;
}

function budgetDiagnostics(p: PlanDoc): Diagnostic[] {
  const b = p.parsed.plan.budget;
  if (!b || typeof b !== 'object' || !(typeof b.avgBits === 'number' || typeof b.bytes === 'number')) return [];
  const t = planTotals(p.assignment!);
  const over = !fitsBudget(t, b);
  const severity = over ? DiagnosticSeverity.Warning : DiagnosticSeverity.Hint;
  // Average bits count codes and scales; byte budgets also adapters (docs/planner.md).
  if (typeof b.avgBits === 'number') {
    const msg =
      `this plan's backbone costs ${t.backboneBits.toFixed(2)} bits per weight (codes and scales), ` +
      `${over ? 'over' : 'within'} the budget of ${b.avgBits}; adapters ${formatBytes(t.adapterBytes)} beside it`;
    return [diag(p, severity, 'budget', msg, ['budget', 'avgBits'])];
  }
  const msg =
    `codes, scales and adapters take ${formatBytes(t.budgetBytes)}, ` +
    `${over ? 'over' : 'within'} the budget of ${formatBytes(b.bytes!)}`;
  return [diag(p, severity, 'budget', msg, ['budget', 'bytes'])];
}

function analysisDiagnostics(p: PlanDoc, threshold: number): Diagnostic[] {
  const a = p.assignment!;
  const ix = p.facts.report;
  const t = planTotals(a);
  // The budget diagnostic's count: codes and scales of the quantized matrices per weight.
  const sizes =
    `${t.backboneBits.toFixed(2)} bits per weight (codes and scales); ` +
    `backbone ${formatBytes(t.backboneBytes)} + adapter ${formatBytes(t.adapterBytes)}`;
  const out: Diagnostic[] = [];
  if (p.facts.reportProblem) {
    const at: JsonPath = p.has(['analysis']) ? ['analysis'] : ['checkpoint'];
    out.push(diag(p, DiagnosticSeverity.Warning, 'report', p.facts.reportProblem, at));
  }
  if (!ix) {
    out.push(
      diag(
        p,
        DiagnosticSeverity.Hint,
        'summary',
        `${a.matrices.length} matrices to quantize at ${sizes}; no analysis yet (loftq-report.json)`,
        ['checkpoint'],
      ),
    );
    return out;
  }
  const s = meanError(a, ix);
  const mean =
    s.meanError === undefined
      ? 'no analysed errors at these widths'
      : `mean LoftQ error ${formatError(s.meanError)}` +
        (s.withErrors < s.matrices ? ` over ${s.withErrors} of ${s.matrices} matrices` : '');
  out.push(diag(p, DiagnosticSeverity.Hint, 'summary', `${s.matrices} matrices: ${mean}, ${sizes}`, ['checkpoint']));
  for (const g of worstGroups(a, ix)) {
    // The threshold is on the LoftQ (weight) error, whichever error ranked the matrices.
    const worstErr = Math.max(...(g.weightErrors ?? g.errors));
    const [at, part]: [JsonPath, SpanPart] =
      g.owner.kind === 'override' ? [['overrides', g.owner.jsonIndex, 'match'], 'value'] : ownerAt(p, g.owner, 'bits');
    out.push(
      diag(
        p,
        worstErr > threshold ? DiagnosticSeverity.Warning : DiagnosticSeverity.Hint,
        'worst',
        g.message,
        at,
        part,
        { owner: g.owner, names: g.names, bits: g.bits, betterBits: g.better?.bits },
      ),
    );
  }
  out.push(...plannerDiagnostics(p));
  // An error the reload raises needs action (quick fixes); one it lowers is only a hint.
  for (const g of reloadGroups(p.assignment, p.facts.report?.raw.matrices ?? []))
    out.push(
      diag(
        p,
        g.rises ? DiagnosticSeverity.Warning : DiagnosticSeverity.Hint,
        'reload',
        g.message,
        ...ownerAt(p, g.owner, 'bits'),
        { owner: g.owner, names: g.names, rises: g.rises },
      ),
    );
  return out;
}

function plannerDiagnostics(p: PlanDoc): Diagnostic[] {
  if (!p.has(['budget'])) return [];
  const c = p.facts.plannerComparison;
  if (!c || !(c.error > 0)) return [];
  const ratio = c.planner / c.error;
  const worth = ratio < PLANNER_WARN_RATIO;
  // Both totals come from the analysis, summed over the planned matrices at their bits and rank: the
  // weight error ‖W − Q − AB‖²_F, or for a calibrated analysis the output error the planner minimises.
  const same = `the same size (${c.avgBits.toFixed(2)} bits per weight, ${formatBytes(c.bytes)} with adapters)`;
  const sum =
    c.measure === 'output'
      ? "Σ gain·‖(W − Q − AB)·S‖² (calibrated output error, weighted by each matrix's measured effect on the " +
        "model's KL)"
      : 'Σ‖W − Q − AB‖²';
  const totals =
    `${sum} over the planned matrices, predicted from the analysis, is ${c.planner.toPrecision(3)} ` +
    `against this plan's ${c.error.toPrecision(3)}`;
  const less = `${Math.round(100 * (1 - ratio))}% less error`;
  const msg = worth
    ? `the planner's plan of ${same} is predicted to leave ${less}: ${totals}; the quick fix applies it`
    : ratio >= 0.995
      ? `the planner finds no better plan of ${same}: ${totals}`
      : `the planner's plan of ${same} would leave ${less}, under the ` +
        `${Math.round(100 * (1 - PLANNER_WARN_RATIO))}% worth a change: ${totals}`;
  return [diag(p, worth ? DiagnosticSeverity.Warning : DiagnosticSeverity.Hint, 'planner', msg, ['budget'], 'key')];
}

/**
 * The plan's summary as a code lens above the line it belongs to. It is a hint (no squiggle, not in
 * the Problems panel), so without the lens it would show only on hover; a lens without a command is
 * shown as plain text.
 */
export function summaryLenses(ds: Diagnostic[]): CodeLens[] {
  return ds
    .filter((d) => d.code === 'summary')
    .map((d) => ({ range: d.range, command: { title: d.message, command: '' } }));
}
