// Typed problems of checkpoint files. Every error names the file, the tensor where there
// is one, and the problem in one line, so the CLI and the server can show it verbatim.

export type CheckpointErrorKind =
  | 'not-found'
  | 'unreadable'
  | 'pickle'
  | 'not-safetensors'
  | 'header-length'
  | 'header-json'
  | 'header-type'
  | 'metadata'
  | 'tensor-entry'
  | 'dtype'
  | 'shape'
  | 'byte-length'
  | 'offsets'
  | 'index'
  | 'unsafe-path'
  | 'io';

export class CheckpointError extends Error {
  constructor(
    readonly kind: CheckpointErrorKind,
    readonly file: string,
    readonly problem: string,
    readonly tensor?: string,
  ) {
    super(`${file}: ${tensor !== undefined ? `tensor '${tensor}': ` : ''}${problem}`);
    this.name = 'CheckpointError';
  }
}
