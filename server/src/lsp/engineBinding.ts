// The engine the server runs `loftq/quantize` with. engine/run.ts (quantizeCheckpoint) is
// being written on main; this binding is the one place to switch it on after a merge.

import type { Engine } from './runs';

export function engineForServer(): Engine | undefined {
  return undefined;
}
