// Runs the planner of one request in dist/planner-worker.js (plannerWorker.ts) and returns its
// plan; the connection's thread only waits. Errors come back as the planner threw them.

import { Worker } from 'node:worker_threads';
import { bundleScript } from '../base/bundleScript';
import { UsageError } from '../base/errors';
import type { Plan, PlanOptions } from '../plan/planner/plan';
import type { Report } from '../protocol/lsp_ext';

export interface PlannerJob {
  report: Report;
  opts: Omit<PlanOptions, 'exclude'>;
  /** Matrices to leave out (a function cannot cross to the worker). */
  exclude: string[];
}

export type PlannerReply = { plan: Plan } | { error: string; usage: boolean };

export function planInWorker(job: PlannerJob): Promise<Plan> {
  return new Promise((resolve, reject) => {
    const w = new Worker(bundleScript('planner-worker.js'));
    let settled = false;
    const end = (f: () => void) => {
      if (settled) return;
      settled = true;
      f();
      void w.terminate();
    };
    w.once('message', (r: PlannerReply) =>
      end(() => ('plan' in r ? resolve(r.plan) : reject(r.usage ? new UsageError(r.error) : new Error(r.error)))),
    );
    w.once('error', (e) => end(() => reject(e)));
    w.once('exit', (code) => end(() => reject(new Error(`the planner worker exited (${code}) without a plan`))));
    w.postMessage(job);
  });
}
