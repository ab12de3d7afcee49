// The fuzzer's families of hostile input: 'checkpoint' (safetensors files and sharded folders
// through the reader, runner.ts) and the model inputs (input-runner.ts): 'calib' token files,
// 'imatrix' files, 'tokenizer' (tokenizer.json and the .txt it reads) and 'config' (config.json's
// numbers). Case i belongs to families[i mod n], so a case is reproducible from (seed, families, i),
// and a checkpoint case is the same whichever other families run beside it.

import { InputConsumer } from './input-consumer';
import { runInputCase } from './input-runner';
import { INPUT_FAMILIES } from './inputs';
import { CaseResult, runCase, RunOptions } from './runner';

export const FAMILIES = ['checkpoint', ...INPUT_FAMILIES] as const;
export type Family = (typeof FAMILIES)[number];

export const isFamily = (s: string): s is Family => (FAMILIES as readonly string[]).includes(s);

export const familyOf = (index: number, families: readonly Family[]): Family => families[index % families.length];

/** A model-input case runs calibrated quantize and eval: its bound is larger than a read's. */
export const DEFAULT_INPUT_TIMEOUT_MS = 12_000;

export interface FamilyRunOptions extends RunOptions {
  families: readonly Family[];
  /** The bound of a model-input case (cancelled at half of it); default DEFAULT_INPUT_TIMEOUT_MS. */
  inputTimeoutMs?: number;
  /** Made on the first model-input case when absent. */
  inputConsumer?: InputConsumer;
}

export async function runFamilyCase(index: number, opts: FamilyRunOptions): Promise<CaseResult> {
  const family = familyOf(index, opts.families);
  if (family === 'checkpoint') return runCase(index, opts);
  opts.inputConsumer ??= await InputConsumer.create();
  return runInputCase(index, family, {
    seed: opts.seed,
    root: opts.root,
    timeoutMs: opts.inputTimeoutMs ?? DEFAULT_INPUT_TIMEOUT_MS,
    consumer: opts.inputConsumer,
  });
}
