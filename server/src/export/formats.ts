// One writer per output format of the registry (registry/formats.ts): what each adds to the
// output folder beside loftq_init/ and the report, and what it refuses before any work. The
// engine calls these by the format's entry; it never branches on a format's name.

import * as path from 'node:path';
import { readSideFile, type Checkpoint, type OutputCommit } from '../checkpoint';
import { UsageError } from '../base/errors';
import { formatProblem, type ExportFormat, type MatrixSettings } from '../registry';
import type { MatrixReport } from '../protocol/lsp_ext';
import type { Finished } from './assemble';
import { writeBackbone, writePacked } from './assemble';
import { HQQ_LOADER_FILE, HQQ_LOADER_SOURCE, hqqConfigJson, writeHqqBackbone } from './hqq';

export interface FormatOutput {
  ck: Checkpoint;
  out: string;
  finished: Map<string, Finished>;
  matrices: MatrixReport[];
  /** The input's config.json, parsed (undefined when it has none). */
  config: object | undefined;
  commit: OutputCommit;
  signal?: AbortSignal;
}

export interface PlannedOutput {
  name: string;
  shape: number[];
  dtype: string;
  settings: MatrixSettings;
  /** Stored [in, out] (GPT-2's Conv1D), not as nn.Linear's [out, in]. */
  fanInFanOut: boolean;
}

export interface FormatWriter {
  /** Refuses, before any work, what this format cannot store (one UsageError line). */
  check(ck: Checkpoint, config: object | undefined, planned: PlannedOutput[], format: ExportFormat): void;
  /** Stages the backbone and the format's own files into `commit`. */
  write(o: FormatOutput): Promise<void>;
  /** Side files this format writes itself instead of copying the input's. */
  writes: readonly string[];
}

function checkQuantizers(_ck: Checkpoint, _config: unknown, planned: PlannedOutput[], format: ExportFormat): void {
  for (const m of planned) {
    const problem = formatProblem(format, m.settings.quantizer);
    if (problem) throw new UsageError(`--format ${format} ${problem} (${m.name}); use --quantizer or another format`);
  }
}

const HQQ_DTYPES = new Set(['F32', 'BF16', 'F16']);

export const FORMAT_WRITERS: Record<ExportFormat, FormatWriter> = {
  peft: {
    check: checkQuantizers,
    write: async (o) => void (await writeBackbone(o.ck, o.out, o.finished, o.commit, o.signal)),
    writes: [],
  },
  packed: {
    check: checkQuantizers,
    write: async (o) => {
      await writeBackbone(o.ck, o.out, o.finished, o.commit, o.signal);
      await writePacked(o.ck, o.out, o.finished, o.commit, o.signal);
    },
    writes: [],
  },
  hqq: {
    check: (ck, config, planned, format) => {
      checkQuantizers(ck, config, planned, format);
      if (!config)
        throw new UsageError(
          `--format hqq needs ${path.join(ck.folder, 'config.json')} (transformers builds the model from it)`,
        );
      for (const m of planned) {
        if (m.fanInFanOut)
          throw new UsageError(
            `--format hqq: ${m.name} is a Conv1D weight stored [in, out]; HQQ replaces only nn.Linear layers`,
          );
        if (!HQQ_DTYPES.has(m.dtype))
          throw new UsageError(`--format hqq: ${m.name} is ${m.dtype}; HQQ computes in float32, bfloat16 or float16`);
      }
    },
    write: async (o) => {
      await writeHqqBackbone(o.ck, o.out, o.finished, o.commit, o.signal);
      const matrices = o.ck.tensors.filter((t) => t.shape.length === 2).map((t) => t.name);
      const text = new TextDecoder().decode((await readSideFile(o.ck.folder, 'config.json'))!);
      await o.commit.addFile(path.join(o.out, 'config.json'), hqqConfigJson(text, o.matrices, matrices), 'data');
      await o.commit.addFile(path.join(o.out, HQQ_LOADER_FILE), HQQ_LOADER_SOURCE, 'data');
    },
    writes: ['config.json', HQQ_LOADER_FILE],
  },
};
