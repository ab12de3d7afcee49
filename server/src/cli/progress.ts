// Progress on stderr: a redrawn bar when stderr is a TTY, plain lines otherwise (logs, CI).
import type { ProgressEvent } from '../protocol/lsp_ext';

function fmtSeconds(s: number | undefined): string {
  if (s === undefined || !Number.isFinite(s)) return '?';
  if (s < 60) return `${Math.round(s)}s`;
  return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
}

export function progressReporter(
  stream: NodeJS.WriteStream = process.stderr,
  quiet = false,
): { onProgress(e: ProgressEvent): void; done(): void } {
  const tty = stream.isTTY === true;
  let drawn = false;
  return {
    onProgress(e) {
      if (quiet) return;
      if (e.phase === 'write') {
        if (tty && drawn) stream.write('\n');
        drawn = false;
        stream.write('writing output files…\n');
        return;
      }
      const i = e.index + 1;
      const line = `[${i}/${e.total}] ${e.name}  ETA ${fmtSeconds(e.etaSeconds)}`;
      if (tty) {
        const width = 24;
        const filled = Math.round((i / e.total) * width);
        stream.write(
          `\r\x1b[2K${'█'.repeat(filled)}${'░'.repeat(width - filled)} ${line}`.slice(0, (stream.columns || 120) + 8),
        );
        drawn = true;
      } else {
        stream.write(line + '\n');
      }
    },
    done() {
      if (tty && drawn) stream.write('\n');
    },
  };
}
