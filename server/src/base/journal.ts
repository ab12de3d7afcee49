// The run journal: one small safetensors file per finished matrix under
// `OUT/.loftq-journal/`, holding what export needs (Q, lora_A, lora_B in the output dtype,
// packed codes + scales) and the matrix's report entry in its metadata. Each entry is
// written to a temp file and renamed, so an entry exists whole or not at all; a run that
// is killed and restarted with the same arguments skips every matrix whose entry exists.

import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import type { TensorInfo } from '../checkpoint';
import type { MatrixReport, MatrixSettings } from '../protocol/lsp_ext';

export const JOURNAL_DIR = '.loftq-journal';
export const JOURNAL_VERSION = '1';

export interface JournalKeyInput {
  tensor: Pick<TensorInfo, 'name' | 'dtype' | 'shape' | 'start' | 'byteLength'>;
  settings: MatrixSettings;
  fanInFanOut: boolean;
  packed: boolean;
  /** Identity of the input file (size + mtime) so a changed checkpoint is recomputed. */
  fileStamp: string;
  /** Content key of the calibration statistic and ridge (calibrated LoftQ), if any. */
  calibration?: string;
}

export function journalKey(k: JournalKeyInput): string {
  const { name, dtype, shape, start, byteLength } = k.tensor;
  const s = k.settings;
  const text = JSON.stringify([
    JOURNAL_VERSION,
    name,
    dtype,
    shape,
    start,
    byteLength,
    s.bits,
    s.rank,
    s.iters,
    s.quantizer,
    s.blockSize,
    k.fanInFanOut,
    k.packed,
    k.fileStamp,
    // Only calibrated entries carry the key: plain runs keep their existing journal names.
    ...(k.calibration ? [k.calibration] : []),
  ]);
  return createHash('sha256').update(text).digest('hex').slice(0, 24);
}

export function journalPath(out: string, key: string): string {
  return path.join(out, JOURNAL_DIR, `${key}.safetensors`);
}

export async function fileStamp(file: string): Promise<string> {
  const st = await fsp.stat(file);
  return `${st.size}:${st.mtimeMs}`;
}

/** Journal entry tensor names. */
export const ENTRY = {
  q: 'q',
  loraA: 'lora_A',
  loraB: 'lora_B',
  codes: 'codes',
  scales: 'scales',
  zero: 'zero',
} as const;

export function entryReport(metadata: Record<string, string>): MatrixReport {
  return JSON.parse(metadata.report) as MatrixReport;
}
