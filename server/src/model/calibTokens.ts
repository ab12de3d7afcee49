// The token sequences of `--calib FILE`: a JSON array of id sequences (`[[1, 403, …], …]`), or a
// `.txt` file tokenized with the checkpoint folder's tokenizer.json (tokenize.ts). Every problem
// — empty file, not JSON, an id outside the vocabulary, a sequence too short, text without a
// tokenizer, another model's tokenizer, more tokens than TOKEN_LIMITS.total — is one InputError
// line naming the file. A sequence longer than TOKEN_LIMITS.sequence is cut into pieces, JSON or
// text alike (tokenize.ts's cutSequence).

import * as path from 'node:path';
import { brief, CheckpointError } from '../checkpoint/errors';
import { readRegularFile } from '../checkpoint/sidefile';
import { InputError } from '../base/errors';
import type { ModelConfig } from './config';
import { checkTokenizerFits, cutSequence, loadTokenizer, tokenizeParagraphs } from './tokenize';
import { TOKEN_LIMITS } from '../registry';

/** 256 MB of JSON ids is tens of millions of tokens — far beyond a calibration set. */
export const MAX_CALIB_FILE_BYTES = 256_000_000;
/** A sequence needs a token to attend back to for its statistics to look like real use. */
export const MIN_SEQUENCE_TOKENS: number = TOKEN_LIMITS.sequence.min;
/** Tokens of one file in all (the registry's TOKEN_LIMITS). */
export const MAX_TOKENS: number = TOKEN_LIMITS.total.max;

export interface CalibrationTokens {
  source: 'tokens' | 'text';
  sequences: number[][];
  tokens: number;
}

async function readBytes(file: string): Promise<Uint8Array> {
  try {
    return await readRegularFile(file, MAX_CALIB_FILE_BYTES);
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? (e as Error).message})`;
    throw new InputError(file, why);
  }
}

function idsFromJson(file: string, text: string): number[][] {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    const why = (e as Error).message.split('\n')[0];
    throw new InputError(file, `is neither a JSON array of token-id sequences nor a .txt file (${why})`);
  }
  if (!Array.isArray(j)) {
    throw new InputError(file, 'must be a JSON array of token-id sequences ([[1, 403, …], …])');
  }
  let total = 0;
  j.forEach((s, k) => {
    if (!Array.isArray(s)) throw new InputError(file, `sequence ${k} is not an array of token ids`);
    total += s.length;
  });
  checkTotal(file, total);
  for (let k = 0; k < j.length; k++) {
    const s = j[k] as unknown[];
    for (let i = 0; i < s.length; i++) {
      if (typeof s[i] !== 'number' || !Number.isInteger(s[i])) {
        const where = `sequence ${k}, position ${i}`;
        throw new InputError(file, `${where}: ${brief(s[i])} is not an integer token id`);
      }
    }
  }
  // Sequences are checked (length, vocabulary) as the file has them, then cut.
  return j as number[][];
}

function checkTotal(file: string, total: number): void {
  if (total > MAX_TOKENS) {
    const why = `holds ${total} tokens; calibration and eval take at most ${MAX_TOKENS} (use a part of it)`;
    throw new InputError(file, why);
  }
}

/** Checks ids against the model: each sequence at least MIN_SEQUENCE_TOKENS long, ids in the vocabulary. */
export function checkSequences(file: string, seqs: readonly (readonly number[])[], c: ModelConfig): number {
  if (seqs.length === 0) throw new InputError(file, 'holds no token sequences');
  let tokens = 0;
  seqs.forEach((s, k) => {
    if (s.length < MIN_SEQUENCE_TOKENS) {
      const has = `${s.length} token${s.length === 1 ? '' : 's'}`;
      throw new InputError(file, `sequence ${k} has ${has}; each needs at least ${MIN_SEQUENCE_TOKENS}`);
    }
    for (let i = 0; i < s.length; i++) {
      const id = s[i];
      if (id < 0 || id >= c.vocabSize) {
        const vocab = `0..${c.vocabSize - 1} per ${path.basename(c.file)}`;
        const where = `sequence ${k}, position ${i}`;
        const why = `token id ${id} is outside the vocabulary (${vocab}; another model's tokens?)`;
        throw new InputError(file, `${where}: ${why}`);
      }
    }
    tokens += s.length;
  });
  return tokens;
}

/** Reads `--calib FILE` for the model in `folder` (config `c`). */
export async function readCalibrationTokens(
  file: string,
  folder: string,
  c: ModelConfig,
  signal?: AbortSignal,
): Promise<CalibrationTokens> {
  const bytes = await readBytes(file);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new InputError(file, 'is not UTF-8 text (token ids as JSON, or a .txt file)');
  }
  if (text.trim() === '') throw new InputError(file, 'is empty');
  if (/\.txt$/i.test(file)) {
    const tok = await loadTokenizer(folder);
    if (!tok) {
      const hint = 'give token ids as a JSON array instead';
      throw new InputError(file, `is text, but ${folder} has no tokenizer.json to tokenize it (${hint})`);
    }
    checkTokenizerFits(tok, c.vocabSize, c.file);
    const sequences = await tokenizeParagraphs(tok, text, { source: file, signal });
    checkTotal(
      file,
      sequences.reduce((a, q) => a + q.length, 0),
    );
    return { source: 'text', sequences, tokens: checkSequences(file, sequences, c) };
  }
  const given = idsFromJson(file, text);
  checkSequences(file, given, c);
  const sequences = given.flatMap((q) => cutSequence(q));
  return { source: 'tokens', sequences, tokens: sequences.reduce((a, q) => a + q.length, 0) };
}
