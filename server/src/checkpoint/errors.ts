// Typed problems of checkpoint files. Every error names the file, the tensor where there
// is one, and the problem in one line, so the CLI and the server can show it verbatim.
// Names and values come from untrusted files, so messages quote them through `quote` /
// `brief`: control characters escaped (one line, always) and length capped.

export type CheckpointErrorKind =
  | 'not-found'
  | 'unreadable'
  | 'pickle'
  | 'not-safetensors'
  | 'header-length'
  | 'header-json'
  | 'header-type'
  | 'duplicate-key'
  | 'metadata'
  | 'tensor-entry'
  | 'dtype'
  | 'shape'
  | 'byte-length'
  | 'offsets'
  | 'index'
  | 'unsafe-path'
  | 'too-large'
  | 'io';

export const CHECKPOINT_ERROR_KINDS: readonly CheckpointErrorKind[] = [
  'not-found',
  'unreadable',
  'pickle',
  'not-safetensors',
  'header-length',
  'header-json',
  'header-type',
  'duplicate-key',
  'metadata',
  'tensor-entry',
  'dtype',
  'shape',
  'byte-length',
  'offsets',
  'index',
  'unsafe-path',
  'too-large',
  'io',
];

const MAX_QUOTED = 120;

/** Control characters escaped: a message stays on one line. */
export function oneLine(s: string): string {
  return s.replace(
    // eslint-disable-next-line no-control-regex
    /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** A string from a file, safe to put in a one-line message: escaped and length capped. */
export function quote(s: string): string {
  return oneLine(s.length > MAX_QUOTED ? s.slice(0, MAX_QUOTED) + '…' : s);
}

/** A short description of any JSON value from a file. Never recurses deeply: a hostile
 *  header may nest arrays a million levels, and JSON.stringify would overflow the stack. */
export function brief(v: unknown, depth = 0): string {
  if (v === null || typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (typeof v === 'string') return JSON.stringify(quote(v));
  if (Array.isArray(v)) {
    if (depth >= 2) return v.length ? '[…]' : '[]';
    const items = v.slice(0, 6).map((x) => brief(x, depth + 1));
    return `[${items.join(', ')}${v.length > 6 ? `, … (${v.length} items)` : ''}]`;
  }
  if (typeof v === 'object')
    return depth >= 2
      ? '{…}'
      : `{${Object.keys(v as object)
          .slice(0, 4)
          .map((k) => JSON.stringify(quote(k)))
          .join(', ')}${Object.keys(v as object).length > 4 ? ', …' : ''}}`;
  return typeof v;
}

export class CheckpointError extends Error {
  constructor(
    readonly kind: CheckpointErrorKind,
    readonly file: string,
    readonly problem: string,
    readonly tensor?: string,
  ) {
    // The problem is our own sentence (file-borne values in it are quoted where it is made).
    super(`${quote(file)}: ${tensor !== undefined ? `tensor '${quote(tensor)}': ` : ''}${oneLine(problem)}`);
    this.name = 'CheckpointError';
  }
}

/** Writing an output failed (disk full, permissions, …). A runtime error, not bad input:
 *  the temp files are already removed when this is thrown. */
export class WriteError extends Error {
  constructor(
    readonly file: string,
    readonly problem: string,
    readonly code?: string,
  ) {
    super(`${quote(file)}: ${quote(problem)}`);
    this.name = 'WriteError';
  }
}

const WRITE_REASONS: Record<string, string> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EFBIG: 'file size limit reached',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'the folder is read-only (read-only file system)',
  ENOENT: 'the folder does not exist',
  ENOTDIR: 'a part of the path is not a folder',
  EISDIR: 'a folder is in the way',
  EEXIST: 'a file is in the way',
  EMFILE: 'too many open files',
};

/** One clear line for an I/O failure while writing `file`. */
export function writeError(file: string, e: unknown): WriteError {
  if (e instanceof WriteError) return e;
  const code = (e as NodeJS.ErrnoException)?.code;
  const reason = (code && WRITE_REASONS[code]) ?? (e instanceof Error ? e.message.split('\n')[0] : String(e));
  return new WriteError(file, `cannot be written: ${reason}${code ? ` (${code})` : ''}`, code);
}
