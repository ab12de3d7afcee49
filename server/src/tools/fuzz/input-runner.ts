// Runs one model-input fuzz case: case i of (seed, family) picks a mutator of the family and a
// tiny base model, copies the base into the case folder, lets the mutator write its hostile
// input, and feeds it to calibrated quantize and eval (input-consumer.ts) under a time bound.
// Halfway through the bound the case is cancelled (as Ctrl-C or an LSP cancel would): whatever
// is running must then stop within CANCEL_GRACE of it. The outcome:
//   accepted — every stage finished with finite results ('invalid' mutators: a missed check);
//   rejected — a stage refused with a typed error, one line naming a file of the case
//              ('valid' mutators: a crash), or stopped promptly when cancelled;
//   crash    — anything else thrown, a broken invariant, a message that is not one line or
//              names no file of the case;
//   hang     — no end within the bound, or a cancel that took longer than the grace.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CALIB_MUTATORS } from './calib-mutations';
import { CONFIG_MUTATORS } from './config-mutations';
import { IMATRIX_MUTATORS } from './imatrix-mutations';
import type { InputConsumer, StageResult } from './input-consumer';
import { pickMutator, type InputFamily, type InputMutator } from './inputs';
import { Rng } from './rng';
import type { CaseResult, Outcome } from './runner';
import { BASE_NAMES, copyBase, ensureBase } from './tiny-model';
import { TOKENIZER_MUTATORS } from './tokenizer-mutations';

export const INPUT_MUTATORS: InputMutator[] = [
  ...CALIB_MUTATORS,
  ...IMATRIX_MUTATORS,
  ...TOKENIZER_MUTATORS,
  ...CONFIG_MUTATORS,
];

/** Files each family leaves valid: a refusal that names one blames the wrong file (a NaN from
 *  config.json's rope_scaling was once refused as the token file's statistics). */
const INNOCENT: Record<InputFamily, string[]> = {
  calib: ['config.json', 'model.safetensors', 'tokenizer.json'],
  imatrix: ['config.json', 'model.safetensors', 'tokenizer.json'],
  tokenizer: ['config.json', 'model.safetensors'],
  config: ['tokens.json', 'tokenizer.json'],
};

/** How long a cancelled stage may take to stop. */
export const CANCEL_GRACE_MS = 1500;

export interface InputRunOptions {
  seed: number;
  root: string;
  /** The case's bound: cancelled at half of it, a hang past it. */
  timeoutMs: number;
  /** The stages (a stand-in in the harness's own tests). */
  consumer: Pick<InputConsumer, 'quantize' | 'eval'>;
}

class Timeout extends Error {}

/** Why a typed rejection does not keep the promise (one line naming a file of the case), if so. */
function badMessage(e: Error, files: string[]): string | undefined {
  if (/[\n\r\u2028\u2029]/.test(e.message)) return `message spans lines: ${JSON.stringify(e.message.slice(0, 300))}`;
  if (e.message.length > 2000) return `message is ${e.message.length} characters`;
  if (!files.some((f) => e.message.includes(f))) return `names no file of the case: ${e.message}`;
  return undefined;
}

export async function runInputCase(index: number, family: InputFamily, opts: InputRunOptions): Promise<CaseResult> {
  const rng = Rng.forCase(opts.seed, index);
  const mutator = pickMutator(
    rng,
    INPUT_MUTATORS.filter((m) => m.family === family),
  );
  const baseName = rng.pick(BASE_NAMES);
  const caseDir = path.join(opts.root, `case-${index}`);
  const model = path.join(caseDir, 'model');
  const t0 = performance.now();
  const notes: string[] = [];
  const result = (outcome: Outcome, extra: Partial<CaseResult> = {}): CaseResult => ({
    index,
    mutator: mutator.name,
    outcome,
    ms: performance.now() - t0,
    ...(notes.length ? { notes } : {}),
    ...extra,
    ...(extra.message ? { message: `${extra.message} [base ${baseName}]` } : {}),
  });
  const ac = new AbortController();
  let abortedAt = 0;
  let abortTimer: NodeJS.Timeout | undefined, hangTimer: NodeJS.Timeout | undefined;
  try {
    const base = await ensureBase(opts.root, baseName);
    await copyBase(base, model);
    const c = await mutator.make({ rng, base, model, dir: caseDir });
    const expect = c.expect ?? mutator.expect;
    abortTimer = setTimeout(() => {
      abortedAt = performance.now();
      ac.abort();
    }, opts.timeoutMs / 2);
    const work = (async () => {
      const stages: StageResult[] = [];
      const out = path.join(caseDir, 'out');
      const q = await opts.consumer.quantize(model, c, out, ac.signal);
      stages.push(q);
      if (c.evalTokens !== undefined && !ac.signal.aborted)
        stages.push(
          await opts.consumer.eval(model, c.evalTokens, base, q.kind === 'accepted' ? out : undefined, ac.signal),
        );
      return stages;
    })();
    work.catch(() => undefined); // a case past its bound may still fail later: not an unhandled rejection
    const hang = new Promise<never>((_, reject) => {
      hangTimer = setTimeout(() => reject(new Timeout()), opts.timeoutMs);
    });
    const stages = await Promise.race([work, hang]);
    const stoppedAt = performance.now();
    for (const s of stages) if (s.kind === 'accepted') notes.push(...s.notes);

    const cancelled = stages.find((s) => s.kind === 'cancelled');
    if (cancelled) {
      const took = stoppedAt - abortedAt;
      if (took > CANCEL_GRACE_MS)
        return result('hang', { message: `${cancelled.stage} took ${took.toFixed(0)} ms to stop after a cancel` });
      notes.push(`${cancelled.stage}: cancelled at the bound, stopped in ${took < 100 ? '<100' : '≥100'} ms`);
      return result('rejected', { kind: 'cancelled at the bound' });
    }
    const rejected = stages.find((s) => s.kind === 'rejected');
    if (rejected?.kind === 'rejected') {
      const e = rejected.error;
      const bad = badMessage(e, [caseDir, base.outDir]);
      if (bad) return result('crash', { message: `${rejected.stage}: ${e.name}: ${bad}` });
      const file = (e as { file?: unknown }).file;
      const named = typeof file === 'string' ? path.basename(file) : '?';
      if ([...INNOCENT[family], ...(c.innocent ?? [])].includes(named))
        return result('crash', { message: `${rejected.stage} blames ${named}, valid in this case: ${e.message}` });
      if (expect === 'valid')
        return result('crash', { message: `valid input refused by ${rejected.stage}: ${e.message}` });
      return result('rejected', { kind: `${e.name} (${named})`, message: `${rejected.stage}: ${e.message}` });
    }
    if (expect === 'invalid')
      return result('missed', { message: `hostile input accepted by ${stages.map((s) => s.stage).join(' and ')}` });
    return result('accepted');
  } catch (e) {
    if (e instanceof Timeout) {
      const after = abortedAt ? ` (cancelled ${(performance.now() - abortedAt).toFixed(0)} ms before)` : '';
      return result('hang', { message: `no end within ${opts.timeoutMs} ms${after}` });
    }
    const err = e as Error;
    // Where it was thrown: a finding's first clue (the bundle's source map gives the file).
    const at = /\n\s*at (.*)/.exec(err?.stack ?? '')?.[1];
    const where = at && !err.message.startsWith('invariant:') ? ` (at ${at})` : '';
    return result('crash', { message: `untyped ${err?.name ?? typeof e}: ${err?.message ?? String(e)}${where}` });
  } finally {
    clearTimeout(abortTimer);
    clearTimeout(hangTimer);
    // A hung case's work may still be running: give it the cancel, then remove its folder.
    ac.abort();
    await fsp.rm(caseDir, { recursive: true, force: true }).catch(() => undefined);
  }
}
