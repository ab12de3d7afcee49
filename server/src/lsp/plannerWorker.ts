// dist/planner-worker.js: the mixed-precision solver for the language server, in a worker
// thread, so a large plan never blocks the server's connection (hovers, diagnostics, cancel).
// One request per worker: { report, opts, exclude } in, { plan } or { error, usage } out.

import { parentPort } from 'node:worker_threads';
import { UsageError } from '../base/errors';
import { planReport } from '../plan/planner/plan';
import type { PlannerJob, PlannerReply } from './plannerJob';

parentPort!.once('message', (job: PlannerJob) => {
  let reply: PlannerReply;
  try {
    const skip = new Set(job.exclude);
    reply = { plan: planReport(job.report, { ...job.opts, exclude: (name) => skip.has(name) }) };
  } catch (e) {
    reply = { error: (e as Error).message ?? String(e), usage: e instanceof UsageError };
  }
  parentPort!.postMessage(reply);
});
