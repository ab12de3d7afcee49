// Runs the planner of one request in dist/planner-worker.js (plannerWorker.ts) and returns its
// plan; the connection's thread only waits. Errors come back as the planner threw them.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
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

/** dist/planner-worker.js next to this bundle (dist/server.js, dist/cli.js). */
function script(): string {
  let d = __dirname;
  for (let i = 0; i < 6; i++) {
    for (const c of [path.join(d, 'planner-worker.js'), path.join(d, 'dist', 'planner-worker.js')])
      if (fs.existsSync(c)) return c;
    d = path.dirname(d);
  }
  throw new Error('dist/planner-worker.js not found: run `node esbuild.mjs` first');
}

export function planInWorker(job: PlannerJob): Promise<Plan> {
  return new Promise((resolve, reject) => {
    const w = new Worker(script());
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
