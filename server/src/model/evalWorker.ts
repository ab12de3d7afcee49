// Worker thread entry (bundled to dist/eval-worker.js): one `loftq eval` run off the language
// server's connection thread, whose JSON-RPC and diagnostics must stay responsive while three
// forward passes run. Messages are in evalThread.ts; a 'cancel' aborts the run, which releases
// the output lock and leaves the report as it was.

import { parentPort, workerData } from 'node:worker_threads';
import { serializeError } from '../base/serializeError';
import { createBackend } from '../linalg/backend';
import { runEval } from './evalRun';
import type { EvalThreadInput, FromEvalThread, ToEvalThread } from './evalThread';

const port = parentPort!;
const send = (m: FromEvalThread) => port.postMessage(m);
const input = workerData as EvalThreadInput;
const ac = new AbortController();
port.on('message', (m: ToEvalThread) => {
  if (m.type === 'cancel') ac.abort();
});

(async () => {
  try {
    const backend = await createBackend(input.backend);
    const { result, reportFile } = await runEval(input.original, input.out, {
      ...(input.tokens !== undefined ? { tokensFile: input.tokens } : {}),
      ...(input.generate ? { generate: input.generate } : {}),
      onSample: (step, steps) => send({ type: 'sample', step, steps }),
      backend,
      updateReport: input.updateReport,
      signal: ac.signal,
      onProgress: (p) => send({ type: 'progress', progress: p }),
    });
    send({ type: 'done', result, reportFile });
  } catch (e) {
    send({ type: 'failed', error: serializeError(e) });
  } finally {
    port.close();
  }
})();
