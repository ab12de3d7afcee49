// What the viewer says of a LoftQ run's output or adapter: whose it is, and why it offers no
// Quantize. Pure: no DOM.
import type { ViewerOrigin } from '../../server/src/protocol/lsp_ext';

export function originNote(o: ViewerOrigin): string {
  const of = o.of ? ` of ${o.of}` : '';
  return o.kind === 'output'
    ? `The output of a LoftQ run${of}: its backbone is already quantized (Q, stored in the input's dtype), ` +
        'with the adapter in loftq_init/ — nothing to quantize here.'
    : `The LoRA adapter (factors A and B) of a LoftQ run${of}, not a model — nothing to quantize here.`;
}
