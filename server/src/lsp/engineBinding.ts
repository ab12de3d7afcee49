// The engine the server runs `loftq/quantize` with (engine/run.ts; its matrix work runs in
// worker_threads, so the connection's thread stays free). One place to swap it.

import { quantizeCheckpoint } from '../engine/run';
import type { Engine } from './runs';

const engine: Engine = { quantizeCheckpoint };

export function engineForServer(): Engine | undefined {
  return engine;
}
