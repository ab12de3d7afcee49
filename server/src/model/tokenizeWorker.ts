// Worker thread entry (bundled to dist/tokenize-worker.js): encodes paragraphs with a
// tokenizer.json off the calling thread. A tokenizer's regexes run synchronously and can
// backtrack for ever (a pre-tokenizer `(a|a)+$` over 40 "a" and a "b"); on a thread of its own
// the caller's event loop stays free for signals, cancels and the time bound, and ends it with
// `terminate()` (tokenize.ts).

import { parentPort, workerData } from 'node:worker_threads';
import { Tokenizer } from '@huggingface/tokenizers';
import type { FromTokenizeThread, TokenizeThreadInput } from './tokenize';

const port = parentPort!;
const input = workerData as TokenizeThreadInput;
const parse = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as Record<string, unknown>;

try {
  const tok = new Tokenizer(parse(input.tokenizer), input.config ? parse(input.config) : {});
  input.paragraphs.forEach((text, k) => {
    const ids = Int32Array.from(tok.encode(text).ids);
    port.postMessage({ type: 'ids', k, ids } satisfies FromTokenizeThread, [ids.buffer]);
  });
} catch (e) {
  port.postMessage({ type: 'failed', message: (e as Error).message?.split('\n')[0] ?? String(e) });
}
port.close();
