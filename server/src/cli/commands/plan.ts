import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from '../args';
import { InputError, UsageError } from '../../engine/errors';
import { writeFileAtomic } from '../../checkpoint';
import type { Command } from '../commands';
import type { PlanBudget, Report } from '../../protocol/lsp_ext';
import { adapterBytesOf, CostModel, DEFAULT_COST, parseBudget } from '../../plan/planner/cost';
import { planReport, Plan } from '../../plan/planner/plan';
import { isReportFile, readReport } from '../../plan/planner/report';
import { applyPlanToText } from '../../plan/planner/planedit';
import { compilePlan, parsePlan, settingsFor } from '../../plan/planfile';

const USAGE = `usage: loftq plan CKPT|REPORT --budget 2.5|3.2GB [--bits 2,3,4,8] [--ranks 8,16,32,64]
         [--objective absolute|relative] [--scales dq|fp32] [--adapter-dtype bf16|f16|f32]
         [--count all|backbone] [--out loftq.json] [--json]`;

const numbers = (v: unknown, key: string) => ((v as string[] | undefined) ?? []).map((s) => {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`option '--${key}' needs positive integers, got '${s}'`);
  return n;
});

function oneOf<T extends string>(v: unknown, key: string, allowed: readonly T[]): T {
  if (!allowed.includes(v as T)) throw new UsageError(`option '--${key}' must be one of ${allowed.join(', ')}, got '${v}'`);
  return v as T;
}

function costModel(report: Report, o: Record<string, unknown>): CostModel {
  const dtype = o['adapter-dtype'] !== undefined
    ? { bf16: 'BF16', f16: 'F16', f32: 'F32' }[oneOf(o['adapter-dtype'], 'adapter-dtype', ['bf16', 'f16', 'f32'] as const)]
    : report.matrices?.[0]?.dtype;
  return {
    blockSize: report.analyses?.[0]?.blockSize ?? DEFAULT_COST.blockSize,
    scales: oneOf(o.scales ?? DEFAULT_COST.scales, 'scales', ['dq', 'fp32'] as const),
    adapterBytes: adapterBytesOf(dtype),
    countAdapters: oneOf(o.count ?? 'all', 'count', ['all', 'backbone'] as const) === 'all',
  };
}

function text(p: Plan): string {
  const f = (x: number) => (Number.isFinite(x) ? x.toPrecision(4) : '—');
  const ratio = (x: number) => (Number.isFinite(x) && x > 0 ? ` (planner/this = ${(p.plan.error / x).toFixed(3)})` : '');
  const u = p.baselines.uniform, k = p.baselines.firstK;
  const lines = [
    `budget ${p.budget.avgBits !== undefined ? `${p.budget.avgBits} bits/param` : `${p.budget.bytes} bytes`} over ${p.choices.length} matrices (${p.parameters} parameters): ${p.budgetBytes} bytes`,
    `planner   error ${f(p.plan.error)}  ${p.plan.bytes} bytes  ${p.plan.avgBits.toFixed(3)} bits  gap ${(p.optimalityGap * 100).toFixed(3)}%`,
    `uniform   error ${f(u.error)}  ${Number.isFinite(u.bytes) ? u.bytes : '—'} bytes  ${f(u.avgBits)} bits  (${Number.isFinite(u.bits) ? `${u.bits}-bit` : 'does not fit'})${ratio(u.error)}`,
    `first-k   error ${f(k.error)}  ${Number.isFinite(k.bytes) ? k.bytes : '—'} bytes  ${f(k.avgBits)} bits  (${Number.isFinite(k.k) ? `k=${k.k}` : 'does not fit'})${ratio(k.error)}`,
    ...p.warnings.map((w) => `warning: ${w}`),
    'overrides:',
    ...p.overrides.map((o) => `  ${o.match}  bits ${o.bits} rank ${o.rank}`),
  ];
  return lines.join('\n') + '\n';
}

export const planCommand: Command = {
  summary: 'mixed-precision plan: the best bits and rank per matrix under a memory budget',
  async run(argv) {
    const { positional, options: o } = parseArgs(argv, {
      budget: { type: 'string' }, bits: { type: 'list' }, ranks: { type: 'list' }, objective: { type: 'string', default: 'absolute' },
      scales: { type: 'string' }, 'adapter-dtype': { type: 'string' }, count: { type: 'string' },
      out: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', alias: 'h' },
    });
    if (o.help) { process.stdout.write(USAGE + '\n'); return 0; }
    if (positional.length !== 1) throw new UsageError('plan takes one checkpoint or analysis report');
    const src = positional[0];
    if (src.endsWith('.json') && !isReportFile(src)) throw new InputError(src, 'no such report file');
    if (!isReportFile(src)) throw new UsageError(`'${src}' is not an analysis report (.json); run 'loftq analyze ${src} --bits 2,3,4,8 --rank 64 --spectrum 64 --report report.json' and plan from report.json`);
    const report = readReport(src);
    const outText = typeof o.out === 'string' && fs.existsSync(o.out) ? fs.readFileSync(o.out, 'utf8') : undefined;
    let budget: PlanBudget | undefined = typeof o.budget === 'string' ? parseBudget(o.budget) : undefined;
    if (!budget && outText) budget = parsePlan(outText).plan.budget;
    if (!budget) throw new UsageError("plan needs '--budget' (e.g. 2.5 or 3.2GB)");
    const bits = numbers(o.bits, 'bits');
    const ranks = numbers(o.ranks, 'ranks');
    // defaults: every analysed bit width; ranks 8…64 up to the analysed rank
    const analysedRank = Math.max(...report.analyses!.map((a) => a.rank));
    const defaultRanks = [8, 16, 32, 64].filter((r) => r <= analysedRank);
    if (!defaultRanks.includes(analysedRank) && analysedRank < 64) defaultRanks.push(analysedRank);
    // matrices the plan file skips are not planned
    const skipped = outText ? compilePlan(parsePlan(outText).plan) : undefined;
    const plan = planReport(report, {
      budget,
      bits: bits.length ? bits : undefined,
      ranks: ranks.length ? ranks : defaultRanks,
      exclude: skipped && ((name: string) => settingsFor(skipped, name) === null),
      objective: oneOf(o.objective, 'objective', ['absolute', 'relative'] as const),
      cost: costModel(report, o),
    });
    if (typeof o.out === 'string') {
      const start = outText ?? `{\n  "checkpoint": ${JSON.stringify(path.relative(path.dirname(path.resolve(o.out)), path.resolve(path.dirname(src), report.checkpoint)) || '.')}\n}\n`;
      await writeFileAtomic(o.out, applyPlanToText(start, plan.choices, budget));
    }
    if (o.json) {
      const { budget: b, plan: s, baselines, optimalityGap } = plan;
      process.stdout.write(JSON.stringify({ budget: b, plan: s, baselines, optimalityGap }, null, 2) + '\n');
    } else process.stdout.write(text(plan));
    return 0;
  },
};
