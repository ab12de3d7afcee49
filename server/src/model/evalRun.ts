// One `loftq eval` run: read the token file, open ORIGINAL and OUTDIR (checked against each other),
// evaluate, and record the result as the report's `model` block. OUTDIR is locked for the whole run
// (the lock quantize takes), so a quantize writing there cannot swap files under the evaluation,
// and the report is rewritten atomically (temp file + rename): a cancel leaves the old one whole.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint, readRegularFile, writeFileAtomic } from '../checkpoint';
import { InputError, throwIfAborted, UsageError } from '../base/errors';
import { lockOutput, removeDeadWritersTemps } from '../base/lock';
import type { MatmulBackend } from '../linalg/backend';
import type { ModelEval } from '../protocol/lsp_ext';
import { openLoftqOutput } from './adapters';
import { readCalibrationTokens } from './calibTokens';
import { readModelConfig } from './config';
import { checkConfigAgainstCheckpoint } from './weights';
import { EvalProgress, evaluateOutput, EvaluateResult } from './evaluate';
import { generateSequences } from './generate';
import { heldOutSeed, TOKEN_LIMITS } from '../registry';

export interface EvalRunOptions {
  /** Token ids (JSON) or a .txt; or, without it, `generate`. */
  tokensFile?: string;
  /** Held-out tokens sampled from ORIGINAL (generate.ts); the seed defaults to heldOutSeed of the
   *  report's calibration seed, so the evaluation never runs on the calibration's own tokens. */
  generate?: { sequences: number; length: number; seed?: number };
  /** Sampling progress (held-out tokens), step of steps. */
  onSample?(step: number, steps: number): void;
  backend: MatmulBackend;
  /** Write the result into OUTDIR/loftq-report.json (default true). */
  updateReport?: boolean;
  signal?: AbortSignal;
  onProgress?(p: EvalProgress): void;
  maxHeldLogits?: number;
}

export interface EvalRunResult {
  result: EvaluateResult;
  /** The report file written, when updateReport. */
  reportFile?: string;
}

/** The block stored in the report: the figures, not the run's timing. */
export function modelEvalBlock(r: EvaluateResult): ModelEval {
  const { seconds: _s, peakRssBytes: _p, ...block } = r;
  return block;
}

export async function runEval(originalPath: string, outDir: string, opts: EvalRunOptions): Promise<EvalRunResult> {
  const original = await openCheckpoint(originalPath);
  const c = await readModelConfig(original.folder);
  checkConfigAgainstCheckpoint(original, c);
  if ((opts.tokensFile === undefined) === (opts.generate === undefined))
    throw new UsageError('eval takes one token source: a token file or held-out tokens sampled from the model');
  const g = opts.generate;
  if (g && g.sequences * g.length > TOKEN_LIMITS.total.max)
    throw new UsageError(
      `held-out tokens N,LEN make N × LEN tokens, at most ${TOKEN_LIMITS.total.max}; got ${g.sequences},${g.length}`,
    );
  // Token problems (empty, not ids, outside the vocabulary) are found before any weight is read.
  const tokens =
    opts.tokensFile !== undefined
      ? await readCalibrationTokens(opts.tokensFile, original.folder, c, opts.signal)
      : undefined;
  const dir = path.resolve(outDir);
  const st = await fsp.stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) {
    throw new InputError(dir, st ? 'is not a folder (give the --out folder of loftq quantize)' : 'does not exist');
  }
  const unlock = await lockOutput(dir);
  try {
    // A killed evaluation's report temp file (its process is gone) goes now.
    await removeDeadWritersTemps(dir);
    const out = await openLoftqOutput(dir, original, c);
    let sequences = tokens?.sequences;
    let generated: ModelEval['generated'];
    if (!sequences) {
      const g = opts.generate!;
      const seed = g.seed ?? heldOutSeed(out.report.calibration?.seed);
      sequences = await generateSequences(original, c, {
        sequences: g.sequences,
        length: g.length,
        seed,
        backend: opts.backend,
        signal: opts.signal,
        onStep: opts.onSample,
      });
      generated = { sequences: g.sequences, length: g.length, seed };
    }
    const result = await evaluateOutput(original, c, out, sequences, {
      backend: opts.backend,
      signal: opts.signal,
      onProgress: opts.onProgress,
      maxHeldLogits: opts.maxHeldLogits,
      ...(opts.tokensFile !== undefined ? { tokensFile: path.resolve(opts.tokensFile) } : {}),
    });
    if (generated) result.generated = generated;
    if (opts.updateReport === false) return { result };
    throwIfAborted(opts.signal);
    // Re-read as plain JSON so that every field the report has (including ones this build does
    // not know) is kept; only `model` is replaced.
    const json = JSON.parse(new TextDecoder().decode(await readRegularFile(out.reportFile, 100_000_000)));
    json.model = modelEvalBlock(result);
    await writeFileAtomic(out.reportFile, JSON.stringify(json, null, 2) + '\n');
    return { result, reportFile: out.reportFile };
  } finally {
    await unlock();
  }
}
