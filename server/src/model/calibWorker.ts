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
    const probes = !!opened.probe;
    port.postMessage(
      { type: 'opened', info: opened.info, stats: first?.packed, streams: !!stream, probes } satisfies FromCalibThread,
      first?.transfer ?? [],
    );
    // Without a pass or probes (an imatrix) the thread is done; else it runs what it is told to.
    if (!stream && !probes) return;
    for (;;) {
      const m = await next();
      if (m.type === 'stream' && stream) {
        await stream(
          async (stats, layer, layers) => {
            const { packed, transfer } = packStats(stats);
            port.postMessage({ type: 'layer', stats: packed, layer, layers } satisfies FromCalibThread, transfer);
            await next();
          },
          undefined,
          m.opts,
        );
        port.postMessage({ type: 'done' } satisfies FromCalibThread);
      } else if (m.type === 'probe' && opened.probe) {
        const r = await opened.probe(m.probes);
        port.postMessage({
          type: 'probed',
          kl: [...r.kl],
          sequences: r.sequences,
          tokens: r.tokens,
        } satisfies FromCalibThread);
      } else return;
    }
  } catch (e) {
    port.postMessage({ type: 'failed', error: serializeError(e) } satisfies FromCalibThread);
  } finally {
    port.close();
  }
})();
