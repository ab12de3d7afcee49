// The heatmap's header: what was quantized, how, on what, how long it took, the mean errors
// and — when an evaluation ran — the model-level figures (KL, same top-1, perplexity).
import type { HeatmapSummary, ModelEval } from '../../server/src/protocol/lsp_ext';
import { el } from './dom';
import { mean } from './means';
import { quantizedText, quantText } from './sizeText';

export interface HeaderCell {
  bits: number;
  rank: number;
}
export interface HeaderValues {
  loftq: number[];
  qlora: number[];
  output: number[];
  qloraOutput: number[];
}

const nf = new Intl.NumberFormat('en-US');

export function duration(s: number): string {
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.round(s - 60 * m)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

function span(values: number[]): string {
  const lo = Math.min(...values),
    hi = Math.max(...values);
  return lo === hi ? String(lo) : `${lo}–${hi}`;
}

function settingsText(s: HeatmapSummary, cells: HeaderCell[]): string {
  const parts: string[] = [];
  const quantizer = s.settings?.quantizer;
  if (cells.length) {
    const bits = cells.map((c) => c.bits),
      ranks = cells.map((c) => c.rank);
    const mixed = new Set(bits).size > 1 || new Set(ranks).size > 1;
    parts.push(quantText(quantizer, span(bits)), `rank ${span(ranks)}`);
    if (mixed) parts.push('mixed precision');
  } else if (s.settings) parts.push(quantText(quantizer, String(s.settings.bits)), `rank ${s.settings.rank}`);
  if (s.settings) {
    parts.push(`${s.settings.iters} iteration${s.settings.iters === 1 ? '' : 's'}`, `block ${s.settings.blockSize}`);
  }
  return parts.join(' · ');
}

function meanLine(label: string, loftq: number[], qlora: number[]): HTMLElement[] {
  const a = mean(loftq),
    b = mean(qlora);
  if (!Number.isFinite(a)) return [];
  const gain = Number.isFinite(b) && a > 0 ? ` (${(b / a).toFixed(2)}× lower with LoftQ)` : '';
  return [
    el('dt', {}, label),
    el(
      'dd',
      { class: 'means' },
      el('span', { class: 'mean-loftq' }, `LoftQ ${a.toFixed(4)}`),
      ' · ',
      el('span', { class: 'mean-qlora' }, `QLoRA ${Number.isFinite(b) ? b.toFixed(4) : '—'}`),
      gain,
    ),
  ];
}

function modelTable(m: ModelEval): HTMLElement {
  const f = (v: number, d: number) => (Number.isFinite(v) ? v.toFixed(d) : '—');
  const t = el(
    'table',
    { class: 'model' },
    el('caption', {}, `Model outputs vs the original on ${evalTokensText(m)}`),
    el(
      'tr',
      {},
      el('th', {}, ''),
      el('th', { title: 'KL(original ‖ init), nats per token: mean (median, 99th percentile)' }, 'KL nats/token ↓'),
      el('th', { title: "positions whose most likely next token equals the original model's" }, 'same top-1 ↑'),
      el('th', {}, 'perplexity ↓'),
      el('th', { title: 'ln(PPL / original PPL)' }, 'ln PPL ratio ↓'),
    ),
  );
  for (const [label, s, cls] of [
    ['LoftQ init', m.loftq, 'loftq'],
    ['QLoRA init', m.qlora, 'qlora'],
  ] as const) {
    t.append(
      el(
        'tr',
        { class: cls },
        el('th', {}, label),
        el('td', { class: 'num kl' }, `${f(s.kl, 3)} (${f(s.klMedian, 3)}, ${f(s.klP99, 2)})`),
        el('td', { class: 'num top1' }, `${f(s.top1, 1)} %`),
        el('td', { class: 'num ppl' }, f(s.ppl, 2)),
        el('td', { class: 'num' }, f(s.lnPplRatio, 3)),
      ),
    );
  }
  t.append(
    el(
      'tr',
      { class: 'original' },
      el('th', {}, 'original'),
      el('td', {}, ''),
      el('td', {}, ''),
      el('td', { class: 'num ppl' }, f(m.original.ppl, 2)),
      el('td', {}, ''),
    ),
  );
  return t;
}

/** What an evaluation ran on: held-out tokens sampled from the model (and the seed), or a file's. */
export function evalTokensText(m: ModelEval): string {
  const g = m.generated;
  if (g)
    return (
      `${nf.format(g.sequences)} held-out sequences × ${nf.format(g.length)} tokens ` +
      `sampled from the model (seed ${g.seed})`
    );
  const file = m.tokensFile ? ` of ${m.tokensFile.split(/[\\/]/).pop()}` : '';
  return `${nf.format(m.sequences)} sequences, ${nf.format(m.tokens)} tokens${file}`;
}

export function header(
  s: HeatmapSummary | undefined,
  cells: HeaderCell[],
  v: HeaderValues,
  onEvaluate?: () => void,
): HTMLElement {
  const facts = el('dl', { class: 'facts' });
  const add = (k: string, ...d: (Node | string)[]) => facts.append(el('dt', {}, k), el('dd', {}, ...d));
  if (s) {
    add('checkpoint', el('code', { title: s.checkpoint }, s.checkpoint));
    if (s.out) add('output', el('code', { title: s.out }, s.out));
    const settings = settingsText(s, cells);
    if (settings) add('settings', settings);
    if (s.quantized) add('quantized', quantizedText(s.quantized));
    if (s.backend) add('backend', s.backend);
    const date = (t: number) => new Date(t).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
    const when = s.writtenAt ? ` · written ${date(s.writtenAt)}` : '';
    if (s.seconds !== undefined) add('time', `${duration(s.seconds)} for ${cells.length} matrices${when}`);
    if (s.calibration) {
      const c = s.calibration;
      const from = c.file ? ` ${c.file.split(/[\\/]/).pop()}` : c.seed !== undefined ? ` (seed ${c.seed})` : '';
      add('calibration', `${c.source}${from}: ${nf.format(c.sequences)} sequences, ${nf.format(c.tokens)} tokens`);
    }
  }
  facts.append(...meanLine('mean error per matrix', v.loftq, v.qlora));
  facts.append(...meanLine('mean output error', v.output, v.qloraOutput));
  const box = el('section', { class: 'summary' }, facts);
  if (s?.model) box.append(modelTable(s.model));
  if (s?.evaluable && onEvaluate) {
    const label = s.model ? 'Evaluate model outputs again' : 'Evaluate model outputs';
    const b = el(
      'button',
      {
        type: 'button',
        class: 'evaluate',
        title: 'KL, same top-1 and perplexity of the LoftQ and QLoRA inits against the original model',
      },
      label,
    );
    b.addEventListener('click', onEvaluate);
    box.append(el('div', { class: 'actions' }, b));
  }
  return box;
}
