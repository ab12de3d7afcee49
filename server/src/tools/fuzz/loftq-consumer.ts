// Feeds every accepted checkpoint's 2-D float tensors through LoftQ (tiny settings) so
// the fuzzer also covers the numerics on hostile values (NaN, ±Inf, denormals, ±3.4e38).
// Finite input must give finite output. Non-finite input must terminate without an
// untyped error; the engine's refuse/skip-by-name policy (quantizeCheckpoint) is checked
// once it is wired in here.

import { FLOAT_DTYPES, openCheckpoint, readTensorF32 } from '../../checkpoint';
import type { MatmulBackend } from '../../linalg/backend';
import { loftqMatrix } from '../../loftq/loftq';
import type { Consumer } from './runner';

const SETTINGS = { bits: 2, rank: 2, iters: 2, quantizer: 'nf' as const, blockSize: 8 };

const allFinite = (x: Float32Array) => x.every((v) => Number.isFinite(v));

export function loftqConsumer(backend: MatmulBackend): Consumer {
  return async (p) => {
    const ck = await openCheckpoint(p);
    for (const t of ck.tensors) {
      if (!FLOAT_DTYPES.has(t.dtype) || t.shape.length !== 2 || t.parameters === 0) continue;
      const w = await readTensorF32(t);
      const [rows, cols] = t.shape;
      const r = await loftqMatrix(w, rows, cols, SETTINGS, backend);
      if (allFinite(w)) {
        for (const [what, x] of [
          ['Q', r.q],
          ['lora_A', r.loraA],
          ['lora_B', r.loraB],
          ['relError', Float32Array.from(r.relErrorPerIter)],
        ] as const) {
          if (!allFinite(x))
            throw new Error(`invariant: finite weights of '${t.name}' (${rows}x${cols}) gave a non-finite ${what}`);
        }
      }
    }
  };
}
