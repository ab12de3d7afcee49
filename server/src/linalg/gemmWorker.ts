// Worker thread entry (bundled to dist/gemm-worker.js) of the split backend
// (linalg/splitBackend.ts): holds row blocks of matrices on its own tfjs backend and
// multiplies them by the thin blocks the main thread sends; and runs kernels on parts of the
// main thread's workspaces (kernels/pool.ts).
import { parentPort } from 'node:worker_threads';
import { createBackend, DeviceMatrix, MatmulBackend } from './backend';
import type { FromGemmWorker, ToGemmWorker } from './gemmProtocol';
import { kernelsOn } from '../kernels/kernels';

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
    } else if (m.type === 'kernel') {
      // A fresh instance per call on the workspace's shared memory: nothing is kept that
      // could hold a dropped workspace's memory alive.
      const k = kernelsOn(m.memory);
      const value = (k[m.name] as (...a: number[]) => number | void)(...m.args);
      send({ id: m.id, value: value ?? 0 });
    } else {
      held.get(m.handle)?.dispose();
      held.delete(m.handle);
      send({ id: m.id });
    }
  } catch (e) {
    send({ id: m.id, error: (e as Error).message ?? String(e) });
  }
});
