// `loftq/eval` in the server: `loftq eval` on a worker thread (model/evalThread.ts) so the
// connection keeps answering, with work-done progress per forward pass and layer, cancel from
// the request or the progress bar, the workspace confinement of `loftq/quantize`, and the CLI's
// one-line messages as InvalidParams.

import { randomUUID } from 'node:crypto';
import {
  CancellationToken,
  Connection,
  ErrorCodes,
  LSPErrorCodes,
  ResponseError,
  WorkDoneProgressCreateRequest,
  WorkDoneProgressReporter,
} from 'vscode-languageserver';
import { CheckpointError } from '../checkpoint';
import { CancelledError, InputError, UsageError } from '../base/errors';
import { modelEvalBlock } from '../model/evalRun';
import { evalOnThread } from '../model/evalThread';
import type { BackendChoice, EvalParams, EvalResult } from '../protocol/lsp_ext';
import { toPath } from './runs';
import { requireInsideWorkspace } from './workspaceConfine';

const invalid = (message: string) => new ResponseError(ErrorCodes.InvalidParams, message);

export class EvalRequests {
  private active = new Map<string, AbortController>();
  private byToken = new Map<string | number, AbortController>();
  workDoneProgressSupported = false;

  constructor(
    private readonly connection: Connection,
    private readonly backendFor: (uri: string) => Promise<BackendChoice>,
    private readonly workspaceRoots: () => string[] = () => [],
  ) {}

  cancelProgress(token: string | number): void {
    this.byToken.get(token)?.abort();
  }

  abortAll(): void {
    for (const ac of this.active.values()) ac.abort();
  }

  async eval(params: EvalParams, token: CancellationToken): Promise<EvalResult> {
    for (const k of ['original', 'out', 'tokens'] as const) {
      if (typeof params?.[k] !== 'string' || !params[k]) throw invalid(`'${k}' must be a path`);
    }
    const [original, out, tokens] = [toPath(params.original), toPath(params.out), toPath(params.tokens)];
    const roots = this.workspaceRoots();
    await requireInsideWorkspace([original, out, tokens], roots, params.confirmedOutsideWorkspace, 'an evaluation');
    if (this.active.has(out)) {
      throw new ResponseError(ErrorCodes.InvalidRequest, `an evaluation of ${out} is already running`);
    }
    const ac = new AbortController();
    this.active.set(out, ac);
    let progress: WorkDoneProgressReporter | undefined;
    const sub = token.onCancellationRequested(() => ac.abort());
    try {
      progress = await this.progress(params, ac);
      progress?.begin('LoftQ eval', 0, 'original model', true);
      const { result, reportFile } = await evalOnThread(
        {
          original,
          out,
          tokens,
          updateReport: params.updateReport !== false,
          backend: params.backend ?? (await this.backendFor(params.out)),
        },
        {
          signal: ac.signal,
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
    } catch (e) {
      if (e instanceof CancelledError || ac.signal.aborted) {
        throw new ResponseError(LSPErrorCodes.RequestCancelled, 'evaluation cancelled; the report was not changed');
      }
      const message = (e instanceof Error ? e.message : String(e)).split('\n')[0];
      const bad = e instanceof CheckpointError || e instanceof UsageError || e instanceof InputError;
      throw new ResponseError(bad ? ErrorCodes.InvalidParams : LSPErrorCodes.RequestFailed, message);
    } finally {
      sub.dispose();
      progress?.done();
      this.active.delete(out);
      for (const [k, v] of this.byToken) if (v === ac) this.byToken.delete(k);
    }
  }

  private async progress(params: EvalParams, ac: AbortController): Promise<WorkDoneProgressReporter | undefined> {
    let token = params.workDoneToken;
    if (token === undefined) {
      if (!this.workDoneProgressSupported) return undefined;
      token = randomUUID();
      await this.connection.sendRequest(WorkDoneProgressCreateRequest.type, { token });
    }
    this.byToken.set(token, ac);
    return this.connection.window.attachWorkDoneProgress(token);
  }
}
