// `npm run fuzz -- --cases N --seed S [--family F,…]`: hostile input of every family (fuzz/families.ts)
// unless --family picks some. 'checkpoint': valid checkpoints mutated into hostile ones and fed to
// the inspect path (see fuzz/runner.ts); with --quantize, through LoftQ
// (fuzz/loftq-consumer.ts) and the whole engine run with its output files checked
// (fuzz/quantize-consumer.ts); with --lsp, to a language server process as a plan's
// checkpoint (fuzz/lsp-observer.ts). 'calib', 'imatrix', 'tokenizer', 'config': a tiny model's
// calibration tokens, importance matrix, tokenizer.json or config.json numbers mutated and fed to
// calibrated quantize and eval (fuzz/input-runner.ts). Cases run in a worker thread
// watched from here, so even a case stuck in synchronous code is caught as a hang and
// the run goes on with the next case. Prints counts per outcome and per error kind;
// exits 1 on any crash, hang, missed rejection, unhandled rejection or memory over the bound.

import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CaseResult, emptySummary, record, Summary } from './fuzz/runner';
import {
  DEFAULT_INPUT_TIMEOUT_MS,
  Family,
  FAMILIES,
  familyOf,
  FamilyRunOptions,
  isFamily,
  runFamilyCase,
} from './fuzz/families';
import { loftqConsumer } from './fuzz/loftq-consumer';
import { quantizeConsumer } from './fuzz/quantize-consumer';
import { LspObserver } from './fuzz/lsp-observer';
import { InputError, UsageError } from '../base/errors';
import { createBackend } from '../linalg/backend';

interface Job {
  from: number;
  to: number;
  seed: number;
  timeoutMs: number;
  inputTimeoutMs: number;
  families: Family[];
  maxHeapMiB: number;
  root: string;
  quantize: boolean;
  lsp: boolean;
}
type Msg =
  { type: 'start'; index: number } | { type: 'result'; r: CaseResult } | { type: 'unhandled' } | { type: 'done' };

async function workerMain(job: Job): Promise<void> {
  process.on('unhandledRejection', () => parentPort!.postMessage({ type: 'unhandled' } satisfies Msg));
  const consumers = job.quantize ? [loftqConsumer(await createBackend('cpu')), quantizeConsumer()] : [];
  const lsp = job.lsp ? await LspObserver.start() : undefined;
  const observers = lsp ? [lsp.observe] : [];
  const opts: FamilyRunOptions = { ...job, consumers, observers, typedErrors: [InputError, UsageError] };
  for (let i = job.from; i < job.to; i++) {
    parentPort!.postMessage({ type: 'start', index: i } satisfies Msg);
    parentPort!.postMessage({ type: 'result', r: await runFamilyCase(i, opts) } satisfies Msg);
  }
  await lsp?.stop();
  opts.inputConsumer?.close();
  parentPort!.postMessage({ type: 'done' } satisfies Msg);
}

function parse(argv: string[]) {
  const o = {
    cases: 1000,
    seed: 1,
    from: 0,
    timeoutMs: 2000,
    inputTimeoutMs: DEFAULT_INPUT_TIMEOUT_MS,
    families: [...FAMILIES] as Family[],
    maxRssMiB: 1024,
    json: false,
    verbose: false,
    quantize: false,
    lsp: false,
  };
  let familiesGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isSafeInteger(v) || v < 0) throw new Error(`${a} needs a non-negative integer`);
      return v;
    };
    if (a === '--cases') o.cases = num();
    else if (a === '--seed') o.seed = num();
    else if (a === '--from') o.from = num();
    else if (a === '--timeout-ms') o.timeoutMs = num();
    else if (a === '--input-timeout-ms') o.inputTimeoutMs = num();
    else if (a === '--family') {
      const names = (argv[++i] ?? '').split(',').map((f) => f.trim());
      const bad = names.find((f) => !isFamily(f));
      if (bad !== undefined) throw new Error(`--family takes ${FAMILIES.join(', ')} (comma-separated), not '${bad}'`);
      // Repeated --family options add up; the first replaces the default (all families).
      o.families = [...(familiesGiven ? o.families : []), ...(names as Family[])];
      familiesGiven = true;
    } else if (a === '--max-rss-mib') o.maxRssMiB = num();
    else if (a === '--json') o.json = true;
    else if (a === '--verbose') o.verbose = true;
    else if (a === '--quantize') o.quantize = true;
    else if (a === '--lsp') o.lsp = true;
    else
      throw new Error(
        `unknown option ${a} (use --cases N --seed S [--from I] [--family ${FAMILIES.join(',')}] ` +
          '[--timeout-ms T] [--input-timeout-ms T] [--max-rss-mib M] [--json] [--verbose] [--quantize] [--lsp])',
      );
  }
  return o;
}

/** Runs [from, to) in workers; a worker stuck past the watchdog is terminated, its case
 *  counted as a hang, and a new worker continues after it. */
async function supervise(job: Job, s: Summary, verbose: boolean): Promise<void> {
  let next = job.from;
  while (next < job.to) {
    next = await new Promise<number>((resolve) => {
      // A heap bound of its own: a case that allocates without limit ends this worker with
      // ERR_WORKER_OUT_OF_MEMORY (a crash, counted), not the whole process with a fatal error.
      const w = new Worker(__filename, {
        workerData: { ...job, from: next },
        resourceLimits: { maxOldGenerationSizeMb: job.maxHeapMiB },
      });
      let current = next;
      let started = Date.now();
      let finished = false;
      const stop = (resume: number, failure?: CaseResult) => {
        if (finished) return;
        finished = true;
        clearInterval(watchdog);
        if (failure) record(s, failure);
        void w.terminate().then(() => resolve(resume));
      };
      const bound = () =>
        (familyOf(current, job.families) === 'checkpoint' ? job.timeoutMs : job.inputTimeoutMs) * 3 + 5000;
      const watchdog = setInterval(() => {
        if (Date.now() - started > bound()) {
          stop(current + 1, {
            index: current,
            mutator: '?',
            outcome: 'hang',
            message: 'worker stuck (synchronous code?)',
            ms: Date.now() - started,
          });
        }
      }, 250);
      w.on('message', (m: Msg) => {
        if (m.type === 'start') {
          current = m.index;
          started = Date.now();
        } else if (m.type === 'result') {
          record(s, m.r);
          if (verbose || (m.r.outcome !== 'accepted' && m.r.outcome !== 'rejected'))
            process.stderr.write(
              `case ${m.r.index} [${m.r.mutator}] ${m.r.outcome}${m.r.kind ? ` (${m.r.kind})` : ''}: ` +
                `${m.r.message ?? ''} (${m.r.ms.toFixed(0)} ms)\n`,
            );
        } else if (m.type === 'unhandled') s.unhandledRejections++;
        else stop(job.to);
      });
      w.on('error', (e) =>
        stop(current + 1, {
          index: current,
          mutator: '?',
          outcome: 'crash',
          message: `worker died: ${e.message}`,
          ms: Date.now() - started,
        }),
      );
      w.on('exit', () =>
        stop(current + 1, {
          index: current,
          mutator: '?',
          outcome: 'crash',
          message: 'worker exited early',
          ms: Date.now() - started,
        }),
      );
    });
  }
}

function report(s: Summary, seed: number, from: number, families: readonly Family[]): string {
  const kinds = Object.entries(s.byKind)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `  ${k.padEnd(16)} ${n}`);
  return [
    `fuzz: seed ${seed}, families ${families.join(',')}, cases ${from}..${from + s.cases - 1}: ` +
      `${s.cases} cases in ${s.seconds.toFixed(1)} s, ` +
      `peak RSS ${s.peakRssMiB.toFixed(0)} MiB`,
    `  accepted ${s.accepted}, rejected ${s.rejected}, crashes ${s.crashes}, hangs ${s.hangs}, ` +
      `missed ${s.missed}, unhandled rejections ${s.unhandledRejections}`,
    'rejections by error kind:',
    ...kinds,
    ...(Object.keys(s.byNote).length
      ? [
          'checked by the consumers:',
          ...Object.entries(s.byNote)
            .sort()
            .map(([k, n]) => `  ${k.padEnd(24)} ${n}`),
        ]
      : []),
    `mutators: ${Object.keys(s.byMutator).length}`,
    ...s.failures.map(
      (f) =>
        `FAIL case ${f.index} [${f.mutator}] ${f.outcome}: ${f.message} ` +
        `(rerun: --from ${f.index} --cases 1 --seed ${seed} --family ${families.join(',')} --verbose)`,
    ),
  ].join('\n');
}

async function main(): Promise<number> {
  let o: ReturnType<typeof parse>;
  try {
    o = parse(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`fuzz: ${(e as Error).message}\n`);
    return 2;
  }
  const root = mkdtempSync(path.join(os.tmpdir(), 'loftq-fuzz-'));
  const s = emptySummary();
  const t0 = performance.now();
  try {
    await supervise(
      {
        from: o.from,
        to: o.from + o.cases,
        seed: o.seed,
        timeoutMs: o.timeoutMs,
        inputTimeoutMs: o.inputTimeoutMs,
        families: o.families,
        maxHeapMiB: o.maxRssMiB,
        root,
        quantize: o.quantize,
        lsp: o.lsp,
      },
      s,
      o.verbose,
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  s.seconds = (performance.now() - t0) / 1000;
  process.stdout.write((o.json ? JSON.stringify(s, null, 2) : report(s, o.seed, o.from, o.families)) + '\n');
  const memoryOk = s.peakRssMiB <= o.maxRssMiB;
  if (!memoryOk) process.stderr.write(`fuzz: peak RSS ${s.peakRssMiB.toFixed(0)} MiB exceeds ${o.maxRssMiB} MiB\n`);
  return s.crashes + s.hangs + s.missed + s.unhandledRejections === 0 && memoryOk ? 0 : 1;
}

if (isMainThread)
  void main().then((code) => {
    process.exitCode = code;
  });
else void workerMain(workerData as Job);
