// The engine the server runs `loftq/quantize` and `loftq/analyze` with (engine/run.ts; its matrix work runs in
// worker_threads, so the connection's thread stays free). One place to swap it.

import { analyzeCheckpoint, quantizeCheckpoint } from '../engine/run';
import { registerCalibrationCollector } from '../model/calibrate';
import type { Engine } from './runs';

// Runs with QuantizeParams.calibration collect their statistics with model/'s forward pass.
registerCalibrationCollector();
const engine: Engine = { quantizeCheckpoint, analyzeCheckpoint };

export function engineForServer(): Engine | undefined {
  return engine;
}
