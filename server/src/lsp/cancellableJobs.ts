// The request bookkeeping that `loftq/quantize`, `loftq/analyze` and `loftq/eval` share: one job
// per key (the output folder or report) at a time, an AbortController that the request's cancel
// and the progress bar's Cancel button (window/workDoneProgress/cancel) both reach, work-done
// progress on the client's token or a server-created one, and the engine's errors as one-line
// LSP errors (bad input: InvalidParams; a cancel: RequestCancelled).

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
import { CancelledError, InputError, UsageError } from '../base/errors';
import { CheckpointError } from '../checkpoint';

export interface Job {
  readonly signal: AbortSignal;
  /** Starts the job's work-done progress (cancellable); undefined when the client shows none. */
  begin(title: string, message: string): Promise<WorkDoneProgressReporter | undefined>;
}

export interface JobOptions {
  /** The request's cancellation. */
  token: CancellationToken;
  /** The client's progress token, if it sent one. */
  workDoneToken?: string | number;
  /** The refusal while another job holds the key. */
  busy: string;
  /** The RequestCancelled message. */
  cancelled: string;
  onCancelled?(): void;
  /** Called with the first line of any other failure's message. */
  onFailed?(message: string): void;
}

export class CancellableJobs {
  workDoneProgressSupported = false;
  private readonly active = new Map<string, AbortController>();
  /** Progress token → job, for window/workDoneProgress/cancel. */
  private readonly byToken = new Map<string | number, AbortController>();

  constructor(private readonly connection: Connection) {}

  /** Handles window/workDoneProgress/cancel for client- and server-created tokens alike. */
  cancelProgress(token: string | number): void {
    this.byToken.get(token)?.abort();
  }

  abortAll(): void {
    for (const ac of this.active.values()) ac.abort();
  }

  /** Runs `work` as the one job under `key`, or refuses with `o.busy` (InvalidRequest) while one runs. */
  async run<T>(key: string, o: JobOptions, work: (job: Job) => Promise<T>): Promise<T> {
    if (this.active.has(key)) throw new ResponseError(ErrorCodes.InvalidRequest, o.busy);
    const ac = new AbortController();
    this.active.set(key, ac);
    const sub = o.token.onCancellationRequested(() => ac.abort());
    let progress: WorkDoneProgressReporter | undefined;
    const job: Job = {
      signal: ac.signal,
      begin: async (title, message) => {
        progress = await this.progress(o.workDoneToken, ac);
        progress?.begin(title, 0, message, true);
        return progress;
      },
    };
    try {
      return await work(job);
    } catch (e) {
      if (e instanceof CancelledError || ac.signal.aborted) {
        o.onCancelled?.();
        throw new ResponseError(LSPErrorCodes.RequestCancelled, o.cancelled);
      }
      const message = (e instanceof Error ? e.message : String(e)).split('\n')[0];
      o.onFailed?.(message);
      if (e instanceof ResponseError) throw e;
      const bad = e instanceof CheckpointError || e instanceof UsageError || e instanceof InputError;
      throw new ResponseError(bad ? ErrorCodes.InvalidParams : LSPErrorCodes.RequestFailed, message);
    } finally {
      sub.dispose();
      progress?.done();
      this.active.delete(key);
      for (const [k, v] of this.byToken) if (v === ac) this.byToken.delete(k);
    }
  }

  /** The client's token when it sent one, else a server-created progress when the client supports it. */
  private async progress(
    token: string | number | undefined,
    ac: AbortController,
  ): Promise<WorkDoneProgressReporter | undefined> {
    if (token === undefined) {
      if (!this.workDoneProgressSupported) return undefined;
      token = randomUUID();
      await this.connection.sendRequest(WorkDoneProgressCreateRequest.type, { token });
    }
    this.byToken.set(token, ac);
    return this.connection.window.attachWorkDoneProgress(token);
  }
}
