// Worker thread entry (bundled to dist/calib-worker.js): one calibration source for the
// language server (calibThread.ts says why and how the statistics travel back).

import { parentPort, workerData } from 'node:worker_threads';
import { serializeError } from '../base/serializeError';
import { openCheckpoint } from '../checkpoint';
import { openCalibration } from './calibrate';
import { packStats } from './calibThread';
import type { CalibThreadInput, FromCalibThread, ToCalibThread } from './calibThread';

const port = parentPort!;
const input = workerData as CalibThreadInput;

/** The next message from the engine's side. */
const next = () => new Promise<ToCalibThread>((resolve) => port.once('message', resolve));

(async () => {
  try {
    const ck = await openCheckpoint(input.checkpoint);
    const opened = await openCalibration(ck, input.params, { backend: input.backend });
    const first = opened.stats && packStats(opened.stats);
    const stream = opened.stream;
    port.postMessage(
      { type: 'opened', info: opened.info, stats: first?.packed, streams: !!stream } satisfies FromCalibThread,
      first?.transfer ?? [],
    );
    // Without a pass (an imatrix) the thread is done; else it waits to be told to run it.
    if (!stream || (await next()).type !== 'stream') return;
    await stream(async (stats, layer, layers) => {
      const { packed, transfer } = packStats(stats);
      port.postMessage({ type: 'layer', stats: packed, layer, layers } satisfies FromCalibThread, transfer);
      await next();
    });
    port.postMessage({ type: 'done' } satisfies FromCalibThread);
  } catch (e) {
    port.postMessage({ type: 'failed', error: serializeError(e) } satisfies FromCalibThread);
  } finally {
    port.close();
  }
})();
