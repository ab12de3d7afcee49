// Output formats: what an output folder holds beside loftq_init/ and the report. The
// writers are export/formats.ts's, one per entry here (the compiler asks for a new one's).

import type { Quantizer } from './quantizers';

export interface FormatSpec {
  /** One line for pickers, hovers and the CLI's help. */
  detail: string;
  /** Quantizers whose results this format can store (undefined: any). */
  quantizers?: readonly Quantizer[];
  /** Whether each matrix's journal entry keeps its codes and scales (the format writes them). */
  keepsCodes: boolean;
  /** Quantizers whose results this format is the natural output for (pickers offer it first). */
  defaultFor?: readonly Quantizer[];
}

export const FORMATS = {
  peft: {
    detail: 'Dense backbone Q in the input dtype + loftq_init/ (loads anywhere; bitsandbytes reloads it at NF4)',
    keepsCodes: false,
  },
  packed: {
    detail: 'peft, plus model.packed.safetensors: codes, scales and codebook per matrix',
    quantizers: ['nf', 'uniform'],
    keepsCodes: true,
  },
  hqq: {
    detail: "Pre-quantized HQQ checkpoint transformers loads at each module's own bits + loftq_init/",
    quantizers: ['hqq'],
    keepsCodes: true,
    defaultFor: ['hqq'],
  },
} as const satisfies Record<string, FormatSpec>;

export type ExportFormat = keyof typeof FORMATS;
export const EXPORT_FORMATS = Object.keys(FORMATS) as ExportFormat[];
export const DEFAULT_FORMAT: ExportFormat = 'peft';

export function formatSpec(f: ExportFormat): FormatSpec {
  return FORMATS[f];
}

/** The format a run of `quantizer` writes unless told otherwise. */
export function defaultFormatFor(quantizer: Quantizer): ExportFormat {
  return EXPORT_FORMATS.find((f) => formatSpec(f).defaultFor?.includes(quantizer)) ?? DEFAULT_FORMAT;
}

/** Why `format` cannot store `quantizer`'s results, as the words after "--format X", or undefined. */
export function formatProblem(format: ExportFormat, quantizer: Quantizer): string | undefined {
  const allowed = formatSpec(format).quantizers;
  if (!allowed || allowed.includes(quantizer)) return undefined;
  return `stores only quantizer ${allowed.join(' or ')} results, not ${quantizer}`;
}
