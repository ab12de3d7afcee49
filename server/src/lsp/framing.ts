// Watches the LSP byte stream (stdio transport) for broken framing. vscode-jsonrpc's reader,
// given a header without a numeric Content-Length, reports an error and keeps its buffer: the
// server stays alive but never answers again, and a huge Content-Length makes it wait forever.
// The guard reads the same bytes alongside the reader, and on the first framing error the
// server exits, so the client restarts it (vscode-languageclient does, up to its limit).

import type { Readable } from 'node:stream';

/** Larger than any message the server must accept (plans are capped far below: planSize.ts). */
export const MAX_MESSAGE_BYTES = 256 * 1024 * 1024;
const MAX_HEADER_BYTES = 16 * 1024;
const CRLF2 = Buffer.from('\r\n\r\n');

export class FramingGuard {
  private header = Buffer.alloc(0);
  private bodyLeft = 0;

  /** Feeds bytes; returns why the framing is broken, or undefined while it is sound. */
  push(chunk: Buffer): string | undefined {
    let at = 0;
    while (at < chunk.length) {
      if (this.bodyLeft > 0) {
        const n = Math.min(this.bodyLeft, chunk.length - at);
        this.bodyLeft -= n;
        at += n;
        continue;
      }
      // Only the bytes up to the end of this header are kept, so the buffer stays small.
      this.header = Buffer.concat([this.header, chunk.subarray(at)]);
      at = chunk.length;
      const end = this.header.indexOf(CRLF2);
      if (end < 0) {
        if (this.header.length > MAX_HEADER_BYTES) return `a message header is longer than ${MAX_HEADER_BYTES} bytes`;
        break;
      }
      const problem = this.parse(this.header.subarray(0, end).toString('ascii'));
      if (problem) return problem;
      const rest = this.header.subarray(end + 4);
      this.header = Buffer.alloc(0);
      if (rest.length) {
        chunk = rest;
        at = 0;
      }
    }
    return undefined;
  }

  private parse(text: string): string | undefined {
    let length: string | undefined;
    for (const line of text.split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon < 0) return `a message header line has no ':' (${JSON.stringify(line.slice(0, 40))})`;
      if (line.slice(0, colon).trim().toLowerCase() === 'content-length') length = line.slice(colon + 1).trim();
    }
    if (length === undefined) return 'a message header has no Content-Length';
    if (!/^\d{1,12}$/.test(length)) return `Content-Length ${JSON.stringify(length.slice(0, 40))} is not a byte count`;
    const n = Number(length);
    if (n > MAX_MESSAGE_BYTES) return `Content-Length ${n} is over the ${MAX_MESSAGE_BYTES}-byte limit`;
    this.bodyLeft = n;
    return undefined;
  }
}

/** Calls `onBroken` once, on the first framing error of `input`. */
export function watchFraming(input: Readable, onBroken: (why: string) => void): void {
  const guard = new FramingGuard();
  let broken = false;
  input.on('data', (chunk: Buffer) => {
    if (broken) return;
    const why = guard.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
    if (why) {
      broken = true;
      onBroken(why);
    }
  });
}

/** For the stdio transport: exit on broken framing (stderr says why), so the client restarts the server. */
export function exitOnBrokenFraming(argv: string[] = process.argv): void {
  if (!argv.includes('--stdio')) return;
  watchFraming(process.stdin, (why) => {
    process.stderr.write(`loftq language server: ${why}; exiting so that the client starts a fresh server\n`);
    process.exit(1);
  });
}
