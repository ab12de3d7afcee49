// Plain text → token ids with the checkpoint folder's own tokenizer.json (and
// tokenizer_config.json when present), through Hugging Face's pure-JS tokenizers library
// (@huggingface/tokenizers: no Python, no network, no native code). The side files are read
// under the shard rules (checkpoint/sidefile.ts).
//
// Text → sequences: each paragraph (text between blank lines) is one sequence, encoded with the
// tokenizer's special tokens (a Llama tokenizer.json adds <s>); a paragraph longer than
// MAX_TEXT_SEQUENCE tokens is cut into pieces of at most that length.

import * as path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { CheckpointError } from '../checkpoint/errors';
import { readSideFile } from '../checkpoint/sidefile';
import { InputError } from '../base/errors';

export const MAX_TEXT_SEQUENCE = 2048;

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
  encode(text: string): number[];
}

/** The tokenizer of FOLDER, or undefined when it has no tokenizer.json. */
export async function loadTokenizer(folder: string): Promise<TextTokenizer | undefined> {
  const file = path.join(folder, 'tokenizer.json');
  const bytes = await readSideFile(folder, 'tokenizer.json');
  if (!bytes) return undefined;
  const json = parseJsonFile(file, bytes);
  const cfgBytes = await readSideFile(folder, 'tokenizer_config.json');
  const cfg = cfgBytes ? parseJsonFile(path.join(folder, 'tokenizer_config.json'), cfgBytes) : {};
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(json, cfg);
  } catch (e) {
    const why = (e as Error).message.split('\n')[0];
    throw new CheckpointError('metadata', file, `is not a tokenizer this library reads (${why})`);
  }
  let size = 0;
  for (const id of tok.get_vocab(true).values()) size = Math.max(size, id + 1);
  return { file, size, encode: (text) => tok.encode(text).ids };
}

/** Paragraphs of `text` as token sequences (see the header). */
export function tokenizeParagraphs(tok: TextTokenizer, text: string): number[][] {
  const out: number[][] = [];
  for (const para of text.replace(/\r\n?/g, '\n').split(/\n[ \t]*\n/)) {
    const p = para.trim();
    if (!p) continue;
    const ids = tok.encode(p);
    for (let i = 0; i < ids.length; i += MAX_TEXT_SEQUENCE) out.push(ids.slice(i, i + MAX_TEXT_SEQUENCE));
  }
  return out;
}

/** Refuses a tokenizer whose ids do not fit the model's embedding (another model's tokenizer). */
export function checkTokenizerFits(tok: TextTokenizer, vocabSize: number, configFile: string): void {
  if (tok.size > vocabSize) {
    const config = path.basename(configFile);
    const why = `has ${tok.size} tokens, but ${config} says vocab_size ${vocabSize} (another model's tokenizer?)`;
    throw new InputError(tok.file, why);
  }
}
