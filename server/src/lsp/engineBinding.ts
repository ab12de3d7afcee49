// The engine the server runs `loftq/quantize` and `loftq/analyze` with (engine/run.ts; its matrix work runs in
// worker_threads, so the connection's thread stays free). One place to swap it.

import { analyzeCheckpoint, quantizeCheckpoint } from '../engine/run';
import { registerThreadedCalibrationCollector } from '../model/calibThread';
import type { Engine } from './runs';

// Runs with QuantizeParams.calibration collect their statistics with model/'s forward pass, on a
// worker thread like the matrix work (the CLI, with no connection to keep answering, runs it in-thread).
registerThreadedCalibrationCollector();
const engine: Engine = { quantizeCheckpoint, analyzeCheckpoint };

export function engineForServer(): Engine | undefined {
  return engine;
}
