// Worker thread entry (bundled to dist/calib-worker.js): one calibration collection for the
// language server (calibThread.ts says why and how the statistics travel back).

import { parentPort, workerData } from 'node:worker_threads';
import { serializeError } from '../base/serializeError';
import { openCheckpoint } from '../checkpoint';
import { collectCalibration } from './calibrate';
import { packStats } from './calibThread';
import type { CalibThreadInput, FromCalibThread } from './calibThread';

const port = parentPort!;
const input = workerData as CalibThreadInput;

(async () => {
  try {
    const ck = await openCheckpoint(input.checkpoint);
    const { stats, info } = await collectCalibration(ck, input.params, { backend: input.backend });
    const { packed, transfer } = packStats(stats);
    port.postMessage({ type: 'done', stats: packed, info } satisfies FromCalibThread, transfer);
  } catch (e) {
    port.postMessage({ type: 'failed', error: serializeError(e) } satisfies FromCalibThread);
  } finally {
    port.close();
  }
})();
