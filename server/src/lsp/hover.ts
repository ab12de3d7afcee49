// Hover on a pattern (override match, target) or a layer name (`model.layers.3`): the
// matrices it selects and their errors at each analysed bit width.

import * as path from 'node:path';
import type { Hover, Position } from 'vscode-languageserver';
import { compileGlob, globMatches, moduleName } from '../plan/glob';
import { describeMatrices, formatError } from '../planInsight/describe';
import { pathAtOffset } from './jsonRanges';
import type { PlanDoc } from './planDoc';
import type { MatrixPlan } from '../planInsight/planModel';
import { REPORT_FILE } from './facts';
import { errorAt } from '../planInsight/reportIndex';
import { calibrationHover } from './calibration';
import type { PathAt } from './jsonRanges';

/** The hovered key or value: its node's range (a key's whole property). */
function hoverRange(p: PlanDoc, at: PathAt, offset: number): Hover['range'] {
  if (at.span) return p.spanRange(at.span);
  const s = p.span(at.path, at.atKey ? 'key' : 'value');
  return s.offset <= offset && offset <= s.offset + s.length ? p.spanRange(s) : undefined;
}

/** Per-matrix rows up to this many matrices; aggregate rows above. */
const LIST_LIMIT = 8;

function selected(pattern: string, matrices: MatrixPlan[]): MatrixPlan[] {
  let g;
  try {
    g = compileGlob(pattern);
  } catch {
    return [];
  }
  const hit = matrices.filter((m) => globMatches(g!, m.tensor.name));
  if (hit.length) return hit;
  // A layer name such as `model.layers.3` selects everything below it.
  const below = compileGlob(`${pattern}.**`);
  return matrices.filter((m) => globMatches(below, m.tensor.name));
}

export function planHover(p: PlanDoc, pos: Position): Hover | null {
  const offset = p.doc.offsetAt(pos);
  const at = pathAtOffset(p.text, p.root, offset);
  if (at.path[0] === 'calibration') return calibrationHover(p, at, hoverRange(p, at, offset));
  if (at.stringValue === undefined || !at.span || at.path[0] === 'checkpoint') return null;
  const a = p.assignment;
  if (!a) return null;
  const ms = selected(at.stringValue, a.matrices);
  const range = p.spanRange(at.span);
  if (!ms.length)
    return { range, contents: { kind: 'markdown', value: `\`${at.stringValue}\` selects no quantized matrix` } };
  const what = describeMatrices(ms.map((m) => m.tensor.name));
  const count = /^\d/.test(what) ? what : `${ms.length} matri${ms.length === 1 ? 'x' : 'ces'}: ${what}`;
  const lines = [`**\`${at.stringValue}\`** — ${count}`, ''];
  const ix = p.facts.report;
  const widths = ix?.bits ?? [];
  if (!ix || !widths.length) {
    lines.push(
      'No analysis yet: run `loftq analyze` (or Quantize with LoftQ) for this checkpoint, ' +
        'or name its `loftq-report.json` in `analysis`.',
    );
    return { range, contents: { kind: 'markdown', value: lines.join('\n') } };
  }
  const cell = (m: MatrixPlan, b: number) => {
    const e = errorAt(ix, m.tensor.name, b);
    if (!e) return '–';
    const v = formatError(e.relError);
    return b === m.settings.bits ? `**${v}**` : v;
  };
  if (ms.length <= LIST_LIMIT) {
    lines.push(
      `| matrix | shape | ${widths.map((b) => `${b}-bit`).join(' | ')} |`,
      `|---|---|${widths.map(() => '---:').join('|')}|`,
    );
    for (const m of ms)
      lines.push(
        `| ${moduleName(m.tensor.name)} | ${m.shape.join('×')} | ${widths.map((b) => cell(m, b)).join(' | ')} |`,
      );
  } else {
    lines.push('| bits | matrices | LoftQ error min | mean | max | QLoRA mean |', '|---:|---:|---:|---:|---:|---:|');
    for (const b of widths) {
      const es = ms.map((m) => errorAt(ix, m.tensor.name, b)).filter((e) => e !== undefined);
      if (!es.length) continue;
      const rel = es.map((e) => e!.relError),
        ql = es.map((e) => e!.qloraRelError);
      const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
      lines.push(
        `| ${b} | ${es.length} | ${formatError(Math.min(...rel))} | ${formatError(mean(rel))} ` +
          `| ${formatError(Math.max(...rel))} | ${formatError(mean(ql))} |`,
      );
    }
  }
  const rank = [
    ...new Set(
      widths.flatMap((b) => ms.map((m) => errorAt(ix, m.tensor.name, b)?.rank).filter((r) => r !== undefined)),
    ),
  ];
  const from = (p.facts.reportSources ?? []).map((f) => `\`${relativeTo(p.path, f)}\``).join(' and ') || REPORT_FILE;
  const ranks = rank.length === 1 ? ` (rank ${rank[0]})` : '';
  lines.push('', `Relative Frobenius error ‖W − Q − AB‖/‖W‖ from ${from}${ranks}; bold: this plan's width.`);
  return { range, contents: { kind: 'markdown', value: lines.join('\n') } };
}

/** A report's path as the plan's reader sees it: relative to the plan's folder, with forward slashes. */
function relativeTo(planFile: string, file: string): string {
  return path.relative(path.dirname(planFile), file).split(path.sep).join('/');
}
