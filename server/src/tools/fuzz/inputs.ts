// What the model-input fuzz families share: a case is a copy of a tiny model folder (tiny-model.ts)
// with one of its inputs mutated — the calibration token file, an imatrix, tokenizer.json (and the
// text it tokenizes) or config.json's numbers — fed to calibrated quantize and to eval
// (input-consumer.ts). A mutator says what the code must do with its output: accept it, refuse it,
// or either (whichever it does, it must do cleanly).

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { CalibrationParams } from '../../protocol/lsp_ext';
import { Rng } from './rng';
import type { TinyModel } from './tiny-model';

export const INPUT_FAMILIES = ['calib', 'imatrix', 'tokenizer', 'config'] as const;
export type InputFamily = (typeof INPUT_FAMILIES)[number];

/** 'valid': must be accepted with finite results; 'invalid': must be refused; 'either': any clean end. */
export type Expect = 'valid' | 'invalid' | 'either';

export interface InputCtx {
  rng: Rng;
  base: TinyModel;
  /** The case's model folder: a copy of the base's files, the mutator's to change. */
  model: string;
  /** The case's folder (holds `model`); input files go here. */
  dir: string;
}

export interface InputCase {
  /** What calibrated quantize reads. */
  calibration: CalibrationParams;
  /** Tokens `loftq eval` reads (JSON ids or .txt); absent: no eval stage. */
  evalTokens?: string;
  /** Overrides the mutator's expectation for this case (e.g. a config value equal to the base's). */
  expect?: Expect;
  /** Files (base names) valid in this case beyond the family's own list: a refusal must not name them. */
  innocent?: string[];
}

export interface InputMutator {
  name: string;
  family: InputFamily;
  expect: Expect;
  /** How often it is picked relative to the family's others (default 1): cases that run a long
   *  forward pass until the cancel are rarer, so that a run covers more. */
  weight?: number;
  make(c: InputCtx): Promise<InputCase>;
}

/** One of `ms`, by weight. */
export function pickMutator(rng: Rng, ms: readonly InputMutator[]): InputMutator {
  const total = ms.reduce((a, m) => a + (m.weight ?? 1), 0);
  let r = rng.next() * total;
  for (const m of ms) if ((r -= m.weight ?? 1) < 0) return m;
  return ms[ms.length - 1];
}

export async function writeInput(dir: string, name: string, content: string | Uint8Array): Promise<string> {
  const p = path.join(dir, name);
  await fsp.writeFile(p, content);
  return p;
}

/** Valid token-id sequences for a vocabulary of `vocab`: 1–6 sequences of 2–40 ids. */
export function validSequences(rng: Rng, vocab: number, maxLen = 40): number[][] {
  return Array.from({ length: rng.int(1, 6) }, () =>
    Array.from({ length: rng.int(2, maxLen) }, () => rng.int(0, vocab - 1)),
  );
}

/** A JSON token file of valid sequences, for stages that need good tokens beside a bad other input. */
export async function validTokenFile(c: InputCtx, name = 'tokens.json'): Promise<string> {
  return writeInput(c.dir, name, JSON.stringify(validSequences(c.rng, c.base.parsed.vocabSize)));
}
