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

const invalid = (message: string) => new ResponseError(ErrorCodes.InvalidParams, message);

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
    for (const k of ['original', 'out', 'tokens'] as const) {
      if (typeof params?.[k] !== 'string' || !params[k]) throw invalid(`'${k}' must be a path`);
    }
    const [original, out, tokens] = [toPath(params.original), toPath(params.out), toPath(params.tokens)];
    const roots = this.workspaceRoots();
    await requireInsideWorkspace([original, out, tokens], roots, params.confirmedOutsideWorkspace, 'an evaluation');
    const job = {
      token,
      workDoneToken: params.workDoneToken,
      busy: `an evaluation of ${out} is already running`,
      cancelled: 'evaluation cancelled; the report was not changed',
    };
    return this.jobs.run(out, job, async ({ signal, begin }) => {
      const progress = await begin('LoftQ eval', 'original model');
      const { result, reportFile } = await evalOnThread(
        {
          original,
          out,
          tokens,
          updateReport: params.updateReport !== false,
          backend: params.backend ?? (await this.backendFor(params.out)),
        },
        {
          signal,
          onProgress: (p) => {
            // Three forward passes (original, LoftQ init, QLoRA init) per chunk of sequences.
            const pass = ['original', 'loftq', 'qlora'].indexOf(p.variant);
            const done = ((p.chunk * 3 + pass) * p.layers + p.layer) / (3 * p.chunks * p.layers);
            const chunk = p.chunks > 1 ? `, chunk ${p.chunk + 1}/${p.chunks}` : '';
            progress?.report(
              Math.min(100, Math.floor(100 * done)),
              `${p.variant} ${p.layer}/${p.layers} layers${chunk}`,
            );
          },
        },
      );
      return { model: modelEvalBlock(result), reportPath: reportFile, seconds: result.seconds };
    });
  }
}
