// `loftq/eval` in the server: `loftq eval` on a worker thread (model/evalThread.ts) so the
// connection keeps answering, with work-done progress per forward pass and layer, cancel from
// the request or the progress bar (cancellableJobs.ts), the workspace confinement of
// `loftq/quantize`, and the CLI's one-line messages as InvalidParams.

import { CancellationToken, Connection, ErrorCodes, ResponseError } from 'vscode-languageserver';
import { modelEvalBlock } from '../model/evalRun';
import { evalOnThread } from '../model/evalThread';
import type { BackendChoice, EvalParams, EvalResult } from '../protocol/lsp_ext';
import { CancellableJobs } from './cancellableJobs';
import { toPath } from './runs';
import { requireInsideWorkspace } from './workspaceConfine';
import { EVAL_SPECS, RUN_SETTING_SPECS, valueProblem } from '../registry';
import { brief } from '../checkpoint/errors';

const invalid = (message: string) => new ResponseError(ErrorCodes.InvalidParams, message);

/** The progress bar's share (percent) of sampling held-out tokens. */
const SAMPLE_SHARE = 20;

/** EvalParams.generate checked against the registry (absent: its default sizes); the seed stays
 *  unset unless given, so runEval picks the one after the calibration's. */
function heldOutSizes(g: EvalParams['generate']): NonNullable<EvalParams['generate']> {
  if (g === undefined) return { sequences: EVAL_SPECS.sequences.default, length: EVAL_SPECS.length.default };
  if (g === null || typeof g !== 'object') throw invalid("'generate' must be { sequences, length, seed? }");
  for (const k of ['sequences', 'length', 'seed'] as const) {
    if (k === 'seed' && g.seed === undefined) continue;
    const bad = valueProblem(EVAL_SPECS[k], g[k]);
    if (bad) throw invalid(`'generate.${k}' must be ${bad}, got ${JSON.stringify(g[k])}`);
  }
  return { sequences: g.sequences, length: g.length, ...(g.seed !== undefined ? { seed: g.seed } : {}) };
}

/** The optional fields' types, checked like every other request's: a string "no" for
 *  updateReport was taken as true and rewrote the report. */
function checkTypedParams(params: EvalParams): void {
  const o = params as unknown as Record<string, unknown>;
  for (const k of ['updateReport', 'confirmedOutsideWorkspace'] as const)
    if (o[k] !== undefined && typeof o[k] !== 'boolean')
      throw invalid(`'${k}' must be true or false, got ${brief(o[k])}`);
  const backend = valueProblem(RUN_SETTING_SPECS.backend, o.backend, true);
  if (o.backend !== undefined && backend) throw invalid(`'backend' must be ${backend}, got ${brief(o.backend)}`);
  const t = o.workDoneToken;
  if (t !== undefined && typeof t !== 'string' && !(typeof t === 'number' && Number.isInteger(t)))
    throw invalid(`'workDoneToken' must be a string or an integer, got ${brief(t)}`);
}

export class EvalRequests {
  private readonly jobs: CancellableJobs;

  constructor(
    connection: Connection,
    private readonly backendFor: (uri: string) => Promise<BackendChoice>,
    private readonly workspaceRoots: () => string[] = () => [],
  ) {
    this.jobs = new CancellableJobs(connection);
  }

  set workDoneProgressSupported(v: boolean) {
    this.jobs.workDoneProgressSupported = v;
  }

  get workDoneProgressSupported(): boolean {
    return this.jobs.workDoneProgressSupported;
  }

  cancelProgress(token: string | number): void {
    this.jobs.cancelProgress(token);
  }

  abortAll(): void {
    this.jobs.abortAll();
  }

  async eval(params: EvalParams, token: CancellationToken): Promise<EvalResult> {
    for (const k of ['original', 'out'] as const) {
      if (typeof params?.[k] !== 'string' || !params[k]) throw invalid(`'${k}' must be a path`);
    }
    if (params.tokens !== undefined && (typeof params.tokens !== 'string' || !params.tokens))
      throw invalid("'tokens' must be a path");
    checkTypedParams(params);
    if (params.tokens !== undefined && params.generate !== undefined)
      throw invalid("give 'tokens' (a file) or 'generate' (held-out tokens sampled from the model), not both");
    const generate = params.tokens === undefined ? heldOutSizes(params.generate) : undefined;
    const [original, out] = [toPath(params.original), toPath(params.out)];
    const tokens = params.tokens === undefined ? undefined : toPath(params.tokens);
    const roots = this.workspaceRoots();
    await requireInsideWorkspace([original, out, tokens], roots, params.confirmedOutsideWorkspace, 'an evaluation');
    const job = {
      token,
      workDoneToken: params.workDoneToken,
      busy: `an evaluation of ${out} is already running`,
      cancelled: 'evaluation cancelled; the report was not changed',
    };
    return this.jobs.run(out, job, async ({ signal, begin }) => {
      const progress = await begin('LoftQ eval', generate ? 'sampling held-out tokens' : 'original model');
      // Sampling held-out tokens takes the first SAMPLE_SHARE of the bar, the three passes the rest.
      const base = generate ? SAMPLE_SHARE : 0;
      const { result, reportFile } = await evalOnThread(
        {
          original,
          out,
          ...(tokens !== undefined ? { tokens } : {}),
          ...(generate ? { generate } : {}),
          updateReport: params.updateReport !== false,
          backend: params.backend ?? (await this.backendFor(params.out)),
        },
        {
          signal,
          onSample: (step, steps) =>
            progress?.report(
              Math.floor((SAMPLE_SHARE * step) / Math.max(1, steps)),
              `sampling held-out tokens ${step}/${steps}`,
            ),
          onProgress: (p) => {
            // Three forward passes (original, LoftQ init, QLoRA init) per chunk of sequences.
            const pass = ['original', 'loftq', 'qlora'].indexOf(p.variant);
            const done = ((p.chunk * 3 + pass) * p.layers + p.layer) / (3 * p.chunks * p.layers);
            const chunk = p.chunks > 1 ? `, chunk ${p.chunk + 1}/${p.chunks}` : '';
            progress?.report(
              Math.min(100, Math.floor(base + (100 - base) * done)),
              `${p.variant} ${p.layer}/${p.layers} layers${chunk}`,
            );
          },
        },
      );
      return { model: modelEvalBlock(result), reportPath: reportFile, seconds: result.seconds };
    });
  }
}
