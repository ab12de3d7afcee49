// What the heatmap can colour by: weight-space errors of the files as written, or (with
// calibration) output-space errors ‖(W − Q − B·A)·S‖ / ‖W·S‖, for LoftQ, for QLoRA and
// their ratio. Pure, so the header, the grid and the tests agree on one definition.
import type { HeatmapMetric } from '../../server/src/protocol/lsp_ext';

export interface Entry {
  loftq: number;
  qlora: number;
  output: number;
  qloraOutput: number;
}

export type Kind = 'loftq' | 'qlora' | 'ratio';
export type Space = 'weight' | 'output';

export const KINDS: { kind: Kind; label: string }[] = [
  { kind: 'loftq', label: 'LoftQ error' },
  { kind: 'qlora', label: 'QLoRA error' },
  { kind: 'ratio', label: 'Improvement' },
];

export const metricOf = (kind: Kind, space: Space): HeatmapMetric =>
  space === 'weight' ? kind : kind === 'loftq' ? 'output' : kind === 'qlora' ? 'qloraOutput' : 'outputRatio';

export const kindOf = (m: HeatmapMetric): Kind =>
  m === 'output' || m === 'loftq' ? 'loftq' : m === 'qlora' || m === 'qloraOutput' ? 'qlora' : 'ratio';
export const spaceOf = (m: HeatmapMetric): Space =>
  m === 'output' || m === 'qloraOutput' || m === 'outputRatio' ? 'output' : 'weight';

export function valueOf(e: Entry, m: HeatmapMetric): number {
  switch (m) {
    case 'loftq':
      return e.loftq;
    case 'qlora':
      return e.qlora;
    case 'ratio':
      return e.qlora / e.loftq;
    case 'output':
      return e.output;
    case 'qloraOutput':
      return e.qloraOutput;
    case 'outputRatio':
      return e.qloraOutput / e.output;
  }
}

export function describe(m: HeatmapMetric): string {
  const out = spaceOf(m) === 'output';
  const err = (x: string) => (out ? `‖(${x})·S‖ / ‖W·S‖, S·Sᵀ = the layer input's second moment` : `‖${x}‖ / ‖W‖`);
  switch (kindOf(m)) {
    case 'loftq':
      return `${out ? 'Output' : 'Weight'} error after LoftQ: ${err('W − Q − A·Bᵀ')}`;
    case 'qlora':
      return `${out ? 'Output' : 'Weight'} error of plain quantization (QLoRA init): ${err('W − quantize(W)')}`;
    case 'ratio':
      return `QLoRA error ÷ LoftQ error${out ? ' (output space)' : ''}`;
  }
}

/** How to read the colours, said next to the legend. */
export const direction = (m: HeatmapMetric) =>
  kindOf(m) === 'ratio' ? 'higher is better: LoftQ removes more error; 1× = no gain' : 'lower is better';

/** The fixed colour range of each metric kind: errors 0–0.5, ratios 1/4×–4×. */
export const FIXED_ERROR: [number, number] = [0, 0.5];
export const FIXED_RATIO = 4;

export const fmtValue = (v: number, m: HeatmapMetric) =>
  Number.isFinite(v) ? (kindOf(m) === 'ratio' ? `${v.toFixed(2)}×` : v.toFixed(4)) : '—';
