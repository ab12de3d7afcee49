// The mixed-precision planner (plan/planner) behind the language server: the `loftq/plan`
// request and the "Apply mixed-precision plan" code action when the report next to the plan
// has analyses. Same options and cost model as `loftq plan`, so editor and CLI agree.

import { adapterBytesOf, countsAdapters, DEFAULT_COST, storageOf } from '../plan/planner/cost';
import type { Plan } from '../plan/planner/plan';
import { offeredRanks } from '../registry';
import { applyPlanToText } from '../plan/planner/planedit';
import type { PlanBudget, PlanRequestParams } from '../protocol/lsp_ext';
import { ERROR_MEASURE_LABELS } from '../protocol/lsp_ext';
import { firstKPlanner, MixedPlan } from './mixedPlan';
import type { PlanDoc } from './planDoc';
import { planInWorker } from './plannerJob';

/** Null when there is no analysis to plan from. Rejects with the planner's UsageError when no plan fits.
 *  The solver runs in a worker thread (plannerJob.ts), never on the connection's thread. */
export async function runPlanner(
  p: PlanDoc,
  budget: PlanBudget,
  o: Partial<PlanRequestParams> = {},
): Promise<Plan | null> {
  const report = p.facts.report?.raw;
  if (!report?.analyses?.length || !p.assignment) return null;
  // As `loftq plan`: the registry's ranks up to the analysed rank, and the analysed rank itself.
  const ranks = offeredRanks(Math.max(...report.analyses.map((a) => a.rank)));
  const planned = new Map(p.assignment.matrices.map((m) => [m.tensor.name, m]));
  const dtype = p.assignment.matrices[0]?.tensor.dtype;
  const blockSize = report.analyses[0].blockSize ?? DEFAULT_COST.blockSize;
  // Only what this plan quantizes: its targets, minus what it skips.
  const names = new Set(report.analyses.flatMap((a) => a.matrices.map((m) => m.name)));
  const exclude = [...names].filter((name) => {
    const m = planned.get(name);
    return !m || m.skipped;
  });
  return planInWorker({
    report,
    opts: {
      budget,
      bits: o.bits,
      ranks: o.ranks ?? ranks,
      objective: o.objective ?? 'absolute',
      cost: {
        ...DEFAULT_COST,
        blockSize,
        scales: storageOf(report.analyses[0].quantizer),
        adapterBytes: adapterBytesOf(dtype),
        countAdapters: countsAdapters(budget),
      },
    },
    exclude,
  });
}

/** The planner when an analysis exists, else the first-k rule. */
export async function plannerOrFirstK(p: PlanDoc, budget: PlanBudget): Promise<MixedPlan | null> {
  let plan: Plan | null;
  try {
    plan = await runPlanner(p, budget);
  } catch {
    plan = null; // no plan fits or the analysis lacks widths: the fixed rule may still fit
  }
  if (!plan) return firstKPlanner(p, budget);
  const k = plan.baselines.firstK;
  // Which error the planner minimised: calibrated output error when the analysis carries it.
  const measure = ERROR_MEASURE_LABELS[plan.errorMeasure];
  const vs =
    Number.isFinite(k.error) && k.error > 0
      ? `, ${((1 - plan.plan.error / k.error) * 100).toFixed(0)}% less predicted ${measure} than ` +
        `the LoftQ paper's rule at this size (the first ${k.k} layer${k.k === 1 ? '' : 's'} at 4 bits)`
      : `, by predicted ${measure}`;
  return {
    description: `planner, ${plan.plan.avgBits.toFixed(2)} bits per weight${vs}`,
    newText: applyPlanToText(p.text, plan.choices, budget),
  };
}

/** Why "apply the planner's plan" cannot be offered for this budget, or undefined when it can. */
export async function plannerUnavailable(p: PlanDoc, budget: PlanBudget): Promise<string | undefined> {
  if (!p.facts.report?.raw.analyses?.length) {
    return (
      'the planner needs an analysis of this checkpoint at several bit widths: ' +
      "run 'LoftQ: Analyze with LoftQ' on this plan"
    );
  }
  try {
    return (await runPlanner(p, budget)) ? undefined : "the checkpoint's header could not be read";
  } catch (e) {
    return (e as Error).message;
  }
}
