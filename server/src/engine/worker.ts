// Worker thread entry (bundled to dist/worker.js): one tfjs backend per thread, matrix
// jobs in, reports out.
import { parentPort } from 'node:worker_threads';
import { createBackend, MatmulBackend } from '../linalg/backend';
import { createSplitBackend } from '../linalg/splitBackend';
import { runAnalyzeJob, runMatrixJobOverlapped } from './matrixJob';
import { serializeError } from '../base/serializeError';
import type { FromWorker, ToWorker } from './workerProtocol';
import { trimThreadMemory } from './trimMemory';

let backend: Promise<MatmulBackend> | undefined;
const port = parentPort!;
const send = (m: FromWorker) => port.postMessage(m);

port.on('message', async (msg: ToWorker) => {
  if (msg.type === 'init') {
    // Several threads (native only, pool.ts workerPlan): products and kernels split inside the module.
    backend = msg.threads > 1 ? createSplitBackend(msg.threads, msg.backend) : createBackend(msg.backend);
    try {
      const b = await backend;
      send({ type: 'ready', backend: b.name, flops: 0 });
    } catch (e) {
      send({ type: 'failed', id: -1, error: serializeError(e) });
    }
    return;
  }
  if (msg.type === 'trim') {
    send({ type: 'trimmed', id: msg.id, bytes: trimThreadMemory() });
    return;
  }
  try {
    const b = await backend!;
    if (msg.type === 'quantize') {
      const report = await runMatrixJobOverlapped(msg.job, b, () => send({ type: 'computed', id: msg.id }));
      send({ type: 'quantized', id: msg.id, report, flops: b.flops });
    } else send({ type: 'analyzed', id: msg.id, rows: await runAnalyzeJob(msg.job, b), flops: b.flops });
  } catch (e) {
    send({ type: 'failed', id: msg.id, error: serializeError(e) });
  }
});
