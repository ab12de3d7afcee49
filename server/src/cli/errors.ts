import { CheckpointError } from '../checkpoint';
import { UsageError, CancelledError, InputError } from '../base/errors';

/** 2 for bad usage or bad input, 130 for a cancelled run, 1 otherwise. */
export function exitCodeOf(e: unknown): number {
  if (e instanceof UsageError || e instanceof CheckpointError || e instanceof InputError) return 2;
  if (e instanceof CancelledError) return 130;
  return 1;
}

export function oneLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split('\n')[0];
}
