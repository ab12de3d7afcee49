// Errors cross the worker boundary as plain objects; typed ones are rebuilt on arrival so
// the CLI and the server can still map them to exit codes and diagnostics.
import { CheckpointError, CheckpointErrorKind } from '../checkpoint';
import { InputError, UsageError, CancelledError } from './errors';

export interface SerializedError {
  name: string;
  message: string;
  /** Constructor arguments of typed errors, to rebuild them on the main thread. */
  kind?: string;
  file?: string;
  tensor?: string;
  problem?: string;
}

export function serializeError(e: unknown): SerializedError {
  if (e instanceof CheckpointError)
    return { name: e.name, message: e.message, kind: e.kind, file: e.file, tensor: e.tensor, problem: e.problem };
  if (e instanceof InputError)
    return { name: e.name, message: e.message, file: e.file, tensor: e.tensor, problem: e.problem };
  if (e instanceof Error) return { name: e.name, message: e.message };
  return { name: 'Error', message: String(e) };
}

export function deserializeError(s: SerializedError): Error {
  switch (s.name) {
    case 'CheckpointError':
      return new CheckpointError(s.kind as CheckpointErrorKind, s.file!, s.problem!, s.tensor);
    case 'InputError':
      return new InputError(s.file!, s.problem!, s.tensor);
    case 'UsageError':
      return new UsageError(s.message);
    case 'CancelledError':
      return new CancelledError();
    default: {
      const e = new Error(s.message);
      e.name = s.name;
      return e;
    }
  }
}
