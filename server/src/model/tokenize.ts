// Plain text → token ids with the checkpoint folder's own tokenizer.json (and
// tokenizer_config.json when present), through Hugging Face's pure-JS tokenizers library
// (@huggingface/tokenizers: no Python, no network, no native code). The side files are read
// under the shard rules (checkpoint/sidefile.ts).
//
// Text → sequences: each paragraph (text between blank lines) is one sequence, encoded with the
// tokenizer's special tokens (a Llama tokenizer.json adds <s>); a paragraph longer than
// MAX_TEXT_SEQUENCE tokens is cut into pieces of at most that length (cutSequence).
//
// Encoding runs on a worker thread (tokenizeWorker.ts): a tokenizer's regexes are the file's, run
// synchronously, and can backtrack for ever. The calling thread stays free: a cancel (Ctrl-C,
// SIGTERM, LSP cancel) terminates the worker at once, and a paragraph that takes longer than
// paragraphTimeLimitMs (5 s + 50 µs per character, > 15× the library's speed on plain text) is
// refused in one line naming tokenizer.json and the text file.

import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Tokenizer } from '@huggingface/tokenizers';
import { brief, CheckpointError, quote } from '../checkpoint/errors';
import { readSideFile } from '../checkpoint/sidefile';
import { CancelledError, InputError } from '../base/errors';
import { bundleScript } from '../base/bundleScript';
import { TOKEN_LIMITS } from '../registry';

/** The registry's bound on one sequence (TOKEN_LIMITS), for text and JSON ids alike. */
export const MAX_TEXT_SEQUENCE: number = TOKEN_LIMITS.sequence.max;

/** `ids` in pieces of at most MAX_TEXT_SEQUENCE tokens. A last piece shorter than a sequence's
 *  minimum (one token: nothing to attend back to, no next token to predict) is left out. */
export function cutSequence(ids: ArrayLike<number>): number[][] {
  if (ids.length <= MAX_TEXT_SEQUENCE) return [Array.from(ids)];
  const out: number[][] = [];
  for (let i = 0; i < ids.length; i += MAX_TEXT_SEQUENCE) {
    const piece = Array.prototype.slice.call(ids, i, i + MAX_TEXT_SEQUENCE) as number[];
    if (piece.length >= TOKEN_LIMITS.sequence.min) out.push(piece);
  }
  return out;
}

function parseJsonFile(file: string, bytes: Uint8Array): Record<string, unknown> {
  let j: unknown;
  try {
    j = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new CheckpointError('header-json', file, `is not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) {
    throw new CheckpointError('header-json', file, 'is not a JSON object');
  }
  return j as Record<string, unknown>;
}

export interface TextTokenizer {
  file: string;
  /** Largest id the tokenizer can produce, + 1. */
  size: number;
  /** tokenizer.json and tokenizer_config.json as read, for the worker thread. */
  bytes: Uint8Array;
  configBytes?: Uint8Array;
  /** Ids of its special added tokens (<s>, </s>, …; not the unknown token). */
  special: Set<number>;
}

/** What the worker thread gets (tokenizeWorker.ts). */
export interface TokenizeThreadInput {
  tokenizer: Uint8Array;
  config?: Uint8Array;
  paragraphs: string[];
}

export type FromTokenizeThread = { type: 'ids'; k: number; ids: Int32Array } | { type: 'failed'; message: string };

/** The longest one paragraph may take to encode (see the header). */
export function paragraphTimeLimitMs(chars: number): number {
  return 5000 + chars / 20;
}

/** The largest id tokenizer.json gives a token (model.vocab, added_tokens), + 1, read from the
 *  file: each id an integer ≥ 0. The library keeps its vocabulary as an array indexed by the ids,
 *  so it never sees -1 or 1.5 (-1 was encoded as is and refused as the text file's "token id -1";
 *  1.5 became id 1 in the encoder's Int32Array, another token, without a word), and counting
 *  through it after an id of 2^31 - 1 was a minute of synchronous work, deaf to signals. */
function vocabularySize(file: string, json: Record<string, unknown>): number {
  const model = json.model as Record<string, unknown> | null | undefined;
  const vocab = model?.vocab;
  const ids: [string, unknown][] = [];
  let size = 0;
  // Unigram: [piece, score] pairs, each piece's id its index.
  if (Array.isArray(vocab)) size = vocab.length;
  else if (typeof vocab === 'object' && vocab !== null) {
    ids.push(...Object.entries(vocab));
    size = ids.length;
  }
  if (Array.isArray(json.added_tokens))
    for (const t of json.added_tokens as Record<string, unknown>[]) ids.push([String(t?.content), t?.id]);
  for (const [token, id] of ids) {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
      const why = `gives token '${quote(token)}' the id ${brief(id)}; ids are integers ≥ 0`;
      throw new CheckpointError('metadata', file, why);
    }
    size = Math.max(size, id + 1);
  }
  return size;
}

/** Ids of the special added tokens, but the unknown token's (text of unknown characters is text). */
function specialIds(json: Record<string, unknown>): Set<number> {
  const unk = (json.model as Record<string, unknown> | null | undefined)?.unk_token;
  const ids = new Set<number>();
  if (Array.isArray(json.added_tokens))
    for (const t of json.added_tokens as Record<string, unknown>[])
      if (t?.special === true && t.content !== unk && typeof t.id === 'number') ids.add(t.id);
  return ids;
}

/** The tokenizer of FOLDER, or undefined when it has no tokenizer.json. */
export async function loadTokenizer(folder: string): Promise<TextTokenizer | undefined> {
  const file = path.join(folder, 'tokenizer.json');
  const bytes = await readSideFile(folder, 'tokenizer.json');
  if (!bytes) return undefined;
  const json = parseJsonFile(file, bytes);
  const size = vocabularySize(file, json);
  const cfgBytes = await readSideFile(folder, 'tokenizer_config.json');
  const cfg = cfgBytes ? parseJsonFile(path.join(folder, 'tokenizer_config.json'), cfgBytes) : {};
  try {
    // Built here only to refuse a file the library cannot read before any text goes to the thread.
    void new Tokenizer(json, cfg);
  } catch (e) {
    const why = (e as Error).message.split('\n')[0];
    throw new CheckpointError('metadata', file, `is not a tokenizer this library reads (${why})`);
  }
  return { file, size, bytes, ...(cfgBytes ? { configBytes: cfgBytes } : {}), special: specialIds(json) };
}

export interface TokenizeOptions {
  /** The text's file, named in messages. */
  source: string;
  signal?: AbortSignal;
}

/** Paragraphs of `text` as token sequences (see the header), encoded on a worker thread. */
export async function tokenizeParagraphs(tok: TextTokenizer, text: string, opts: TokenizeOptions): Promise<number[][]> {
  const paragraphs = text
    .replace(/\r\n?/g, '\n')
    .split(/\n[ \t]*\n/)
    .map((p) => p.trim())
    .filter((p) => p !== '');
  const encoded = await encodeOnThread(tok, paragraphs, opts);
  // A tokenizer that drops the text (a Split pre-tokenizer without a pattern gave <s> alone) would
  // calibrate on special tokens only, or be refused as the text file's "sequence of 1 token".
  encoded.forEach((ids, k) => {
    if (ids.every((id) => tok.special.has(id))) {
      const what = `paragraph ${k + 1} of ${opts.source} (${paragraphs[k].length} characters)`;
      const why = `encodes ${what} to special tokens only: its text is lost (a pre-tokenizer or model that drops it?)`;
      throw new InputError(tok.file, why);
    }
  });
  return encoded.flatMap((ids) => cutSequence(ids));
}

function encodeOnThread(tok: TextTokenizer, paragraphs: string[], opts: TokenizeOptions): Promise<Int32Array[]> {
  if (paragraphs.length === 0) return Promise.resolve([]);
  if (opts.signal?.aborted) return Promise.reject(new CancelledError());
  const input: TokenizeThreadInput = { tokenizer: tok.bytes, config: tok.configBytes, paragraphs };
  const worker = new Worker(bundleScript('tokenize-worker.js'), { workerData: input });
  const out: Int32Array[] = [];
  return new Promise<Int32Array[]>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const finish = (e?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      // terminate() stops even a regex that backtracks: V8 interrupts it.
      void worker.terminate();
      if (e) reject(e);
      else resolve(out);
    };
    const watch = (k: number) => {
      clearTimeout(timer);
      const limit = paragraphTimeLimitMs(paragraphs[k].length);
      timer = setTimeout(() => {
        const what = `paragraph ${k + 1} of ${opts.source} (${paragraphs[k].length} characters)`;
        const why = `took longer than ${(limit / 1000).toFixed(1)} s to tokenize ${what}`;
        finish(new InputError(tok.file, `${why}; a pre-tokenizer or normalizer regex that backtracks?`));
      }, limit);
    };
    const onAbort = () => finish(new CancelledError());
    opts.signal?.addEventListener('abort', onAbort);
    watch(0);
    worker.on('message', (m: FromTokenizeThread) => {
      if (m.type === 'failed') {
        finish(new InputError(tok.file, `cannot tokenize ${opts.source} (${m.message})`));
        return;
      }
      out[m.k] = m.ids;
      if (m.k + 1 < paragraphs.length) watch(m.k + 1);
      else finish();
    });
    worker.on('error', (e) => finish(new InputError(tok.file, `cannot tokenize ${opts.source} (${e.message})`)));
    worker.on('exit', (code) => {
      if (out.length < paragraphs.length) finish(new Error(`the tokenizer thread stopped (exit ${code})`));
    });
  });
}

/** Refuses a tokenizer whose ids do not fit the model's embedding (another model's tokenizer). */
export function checkTokenizerFits(tok: TextTokenizer, vocabSize: number, configFile: string): void {
  if (tok.size > vocabSize) {
    const config = path.basename(configFile);
    const why = `has ${tok.size} tokens, but ${config} says vocab_size ${vocabSize} (another model's tokenizer?)`;
    throw new InputError(tok.file, why);
  }
}
