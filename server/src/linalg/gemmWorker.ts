// Worker thread entry (bundled to dist/gemm-worker.js) of the split backend
// (linalg/splitBackend.ts): holds row blocks of matrices on its own tfjs backend and
// multiplies them by the thin blocks the main thread sends.
import { parentPort } from 'node:worker_threads';
import { createBackend, DeviceMatrix, MatmulBackend } from './backend';
import type { FromGemmWorker, ToGemmWorker } from './gemmProtocol';

const port = parentPort!;
const send = (m: FromGemmWorker, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);
let backend: Promise<MatmulBackend> | undefined;
const held = new Map<number, DeviceMatrix>();

port.on('message', async (m: ToGemmWorker) => {
  try {
    if (m.type === 'init') {
      backend = createBackend(m.backend);
      send({ id: m.id, backend: (await backend).name });
    } else if (m.type === 'hold') {
      held.set(m.handle, await (await backend!).hold(m.a, m.rows, m.cols));
      send({ id: m.id });
    } else if (m.type === 'times') {
      const h = held.get(m.handle);
      if (!h) throw new Error(`gemm worker: no matrix ${m.handle}`);
      const out = await h.times(m.b, m.n);
      send({ id: m.id, out }, [out.buffer as ArrayBuffer]);
    } else {
      held.get(m.handle)?.dispose();
      held.delete(m.handle);
      send({ id: m.id });
    }
  } catch (e) {
    send({ id: m.id, error: (e as Error).message ?? String(e) });
  }
});
