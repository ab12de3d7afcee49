// Runs fuzz cases: builds case i from (seed, i), feeds it to the inspect path
// (openCheckpoint → inspectCheckpoint → every tensor read, floats as float32) under a
// time bound, and classifies the outcome. A rejection must be a CheckpointError whose one
// line names a file of the case; anything else thrown is a crash.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CheckpointError, FLOAT_DTYPES, openCheckpoint, quote, readTensorBytes, readTensorF32 } from '../../checkpoint';
import { inspectCheckpoint } from '../../engine/inspect';
import { randomModel } from './model';
import { Mutator, SINGLE_FILE_MUTATORS, VALID } from './mutations';
import { Rng } from './rng';
import { SHARDED_MUTATORS } from './sharded-mutations';

export const MUTATORS: Mutator[] = [...VALID, ...SINGLE_FILE_MUTATORS, ...SHARDED_MUTATORS];

export type Outcome = 'accepted' | 'rejected' | 'crash' | 'hang' | 'missed';

export interface CaseResult {
  index: number;
  mutator: string;
  outcome: Outcome;
  kind?: string;
  message?: string;
  /** What the consumers checked (e.g. 'quantized', 'nonfinite-refused'), counted in the summary. */
  notes?: string[];
  ms: number;
}

/** A consumer of an opened checkpoint beyond inspect (e.g. quantize), pluggable so the
 *  harness can grow with the engine. Must throw CheckpointError (or a typed error the
 *  caller lists in `typedErrors`) on bad input. */
export type Consumer = (checkpointPath: string, caseDir: string) => Promise<string[] | void>;

/** Sees every case, accepted or not (e.g. the language server, which must answer hostile
 *  checkpoints with diagnostics, not crash). Throws a plain Error on a broken invariant. */
export type Observer = Consumer;

export interface RunOptions {
  seed: number;
  root: string;
  timeoutMs: number;
  consumers?: Consumer[];
  observers?: Observer[];
  /** Extra error classes that count as clean rejections (e.g. the engine's InputError). */
  typedErrors?: (new (...a: never[]) => Error)[];
}

class Timeout extends Error {}

/** Mutators whose output is a valid checkpoint: it must be accepted and read back exactly. */
const VALID_NAMES = new Set(['valid', 'hostile-values', 'sharded-valid']);

/** Mutators whose every output is invalid: accepting one is a missed check. */
export const MUST_REJECT = new Set([
  'length-zero',
  'length-huge',
  'length-past-eof',
  'file-tiny',
  'json-truncated',
  'json-not-object',
  'duplicate-key',
  'dtype-unknown',
  'shape-overflow',
  'offsets-past-eof',
  'offsets-malformed',
  'data-truncated',
  'data-trailing',
  'metadata-wrong-type',
  'pickle-magic',
  'pickle-name',
  'entry-wrong-type',
  'sharded-missing-shard',
  'sharded-escaping-name',
  'sharded-symlink-out',
  'sharded-pickle-shard',
  'sharded-bad-index',
]);

async function inspectPath(p: string, expectValid: boolean, expected?: Map<string, Uint8Array>): Promise<void> {
  const ck = await openCheckpoint(p);
  const info = inspectCheckpoint(ck);
  if (info.totals.tensors !== ck.tensors.length)
    throw new Error('invariant: inspect counts differ from the checkpoint');
  for (const t of ck.tensors) {
    const bytes = await readTensorBytes(t);
    if (bytes.byteLength !== t.byteLength)
      throw new Error(`invariant: read ${bytes.byteLength} bytes of '${t.name}', header says ${t.byteLength}`);
    if (FLOAT_DTYPES.has(t.dtype)) {
      const f = await readTensorF32(t);
      if (f.length !== t.parameters)
        throw new Error(`invariant: '${t.name}' has ${f.length} values, shape says ${t.parameters}`);
    }
    const want = expected?.get(t.name);
    if (expectValid && want && !(want.length === bytes.length && want.every((b, i) => b === bytes[i])))
      throw new Error(`invariant: '${t.name}' read back different bytes`);
  }
}

/** Checks that a rejection is the typed, one-line, file-naming error the tool promises. */
function badRejection(e: unknown, caseDir: string, typed: RunOptions['typedErrors']): string | undefined {
  if (e instanceof CheckpointError) {
    if (!e.file.startsWith(caseDir)) return `names '${e.file}', not a file of the case`;
    if (!e.message.startsWith(`${quote(e.file)}: `)) return 'message does not start with the file';
    if (/[\n\r\u2028\u2029]/.test(e.message)) return 'message spans lines';
    if (e.message.length > 2000) return `message is ${e.message.length} characters`;
    return undefined;
  }
  if (typed?.some((c) => e instanceof c))
    return /[\n\r]/.test((e as Error).message) ? 'message spans lines' : undefined;
  return `untyped ${(e as Error)?.name ?? typeof e}: ${(e as Error)?.message ?? String(e)}`;
}

export async function runCase(index: number, opts: RunOptions): Promise<CaseResult> {
  const rng = Rng.forCase(opts.seed, index);
  const mutator = rng.pick(MUTATORS);
  const model = randomModel(rng, mutator.name === 'hostile-values' || rng.chance(0.3));
  const caseDir = path.join(opts.root, `case-${index}`);
  const ckDir = path.join(caseDir, 'ck');
  await fsp.mkdir(ckDir, { recursive: true });
  const t0 = performance.now();
  let timer: NodeJS.Timeout | undefined;
  let notes: string[] = [];
  const result = (outcome: Outcome, extra: Partial<CaseResult> = {}): CaseResult => ({
    index,
    mutator: mutator.name,
    outcome,
    ms: performance.now() - t0,
    ...(notes.length ? { notes } : {}),
    ...extra,
  });
  try {
    const p = await mutator.make({ rng, model, dir: ckDir });
    const expected = new Map(model.tensors.map((t) => [t.name, t.data]));
    notes = [];
    const work = (async () => {
      for (const o of opts.observers ?? []) notes.push(...((await o(p, caseDir)) ?? []));
      await inspectPath(p, VALID_NAMES.has(mutator.name), expected);
      for (const c of opts.consumers ?? []) notes.push(...((await c(p, caseDir)) ?? []));
    })();
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Timeout()), opts.timeoutMs);
    });
    await Promise.race([work, timeout]);
    return MUST_REJECT.has(mutator.name)
      ? result('missed', { message: 'hostile input was accepted' })
      : result('accepted');
  } catch (e) {
    if (e instanceof Timeout) return result('hang', { message: `no answer within ${opts.timeoutMs} ms` });
    const bad = badRejection(e, caseDir, opts.typedErrors);
    if (bad) return result('crash', { message: bad });
    if (VALID_NAMES.has(mutator.name))
      return result('crash', { message: `valid input rejected: ${(e as Error).message}` });
    return result('rejected', {
      kind: e instanceof CheckpointError ? e.kind : (e as Error).name,
      message: (e as Error).message,
    });
  } finally {
    clearTimeout(timer);
    await fsp.rm(caseDir, { recursive: true, force: true }).catch(() => undefined);
  }
}

export interface Summary {
  cases: number;
  accepted: number;
  rejected: number;
  crashes: number;
  hangs: number;
  /** Inputs that are invalid by construction but were accepted. */
  missed: number;
  unhandledRejections: number;
  byKind: Record<string, number>;
  /** Counts of what the consumers and observers checked. */
  byNote: Record<string, number>;
  byMutator: Record<string, Record<Outcome, number>>;
  failures: CaseResult[];
  peakRssMiB: number;
  seconds: number;
}

export function emptySummary(): Summary {
  return {
    cases: 0,
    accepted: 0,
    rejected: 0,
    crashes: 0,
    hangs: 0,
    missed: 0,
    unhandledRejections: 0,
    byKind: {},
    byNote: {},
    byMutator: {},
    failures: [],
    peakRssMiB: 0,
    seconds: 0,
  };
}

export function record(s: Summary, r: CaseResult): void {
  s.cases++;
  for (const n of r.notes ?? []) s.byNote[n] = (s.byNote[n] ?? 0) + 1;
  const m = (s.byMutator[r.mutator] ??= { accepted: 0, rejected: 0, crash: 0, hang: 0, missed: 0 });
  m[r.outcome]++;
  if (r.outcome === 'accepted') s.accepted++;
  else if (r.outcome === 'rejected') {
    s.rejected++;
    s.byKind[r.kind!] = (s.byKind[r.kind!] ?? 0) + 1;
  } else {
    if (r.outcome === 'crash') s.crashes++;
    else if (r.outcome === 'hang') s.hangs++;
    else s.missed++;
    if (s.failures.length < 50) s.failures.push(r);
  }
  s.peakRssMiB = Math.max(s.peakRssMiB, process.memoryUsage().rss / 2 ** 20);
}

/** Runs cases [from, to) in this process (checkpoint cases unless `run` says otherwise: fuzz/families.ts),
 *  counting unhandled rejections meanwhile. */
export async function runCases(
  from: number,
  to: number,
  opts: RunOptions,
  onResult?: (r: CaseResult) => void,
  run: (index: number) => Promise<CaseResult> = (i) => runCase(i, opts),
): Promise<Summary> {
  const s = emptySummary();
  const onUnhandled = () => {
    s.unhandledRejections++;
  };
  process.on('unhandledRejection', onUnhandled);
  const t0 = performance.now();
  try {
    for (let i = from; i < to; i++) {
      const r = await run(i);
      record(s, r);
      onResult?.(r);
    }
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
  s.seconds = (performance.now() - t0) / 1000;
  return s;
}
