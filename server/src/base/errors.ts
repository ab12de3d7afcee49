// Typed problems of the engine (besides CheckpointError for the files themselves).

/** Bad command-line usage or settings (bits, rank, …). */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** Input that cannot be processed: names the file and the problem (e.g. NaN weights). */
export class InputError extends Error {
  override name = 'InputError';
  constructor(
    readonly file: string,
    readonly problem: string,
    readonly tensor?: string,
  ) {
    super(`${file}: ${tensor !== undefined ? `tensor '${tensor}': ` : ''}${problem}`);
  }
}

export class CancelledError extends Error {
  override name = 'CancelledError';
  constructor() {
    super('cancelled');
  }
}

export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new CancelledError();
}

/** Lets the event loop run (signal handlers, an LSP cancel, timers), then throws if `signal` was
 *  aborted meanwhile. Long synchronous work (a forward pass, sampling) calls it between steps: an
 *  abort flag is only ever set by an event, which a loop that never yields would never see. */
export async function yieldAndCheck(signal?: AbortSignal): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve));
  throwIfAborted(signal);
}
