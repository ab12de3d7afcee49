// The error heatmap webview: layers × module kinds, coloured by the chosen metric.
// Every tensor name is inserted with textContent — a name is data, never markup.
import './heatmap.css';
import type { FromHeatmap, HeatmapBatch, HeatmapCell, HeatmapMetric, HeatmapState, ToHeatmap } from '../../server/src/protocol/lsp_ext';
import { extent, legendGradient, rgb, textOn, viridis } from './colormap';
import { layoutTensors } from './layout';
import { el, sparkline } from './dom';

declare function acquireVsCodeApi(): { postMessage(m: FromHeatmap): void; getState(): HeatmapState | undefined; setState(s: HeatmapState): void };
const vscode = acquireVsCodeApi();

interface Entry {
  cell: HeatmapCell;
  loftq: number;
  qlora: number;
  perIter: Float32Array;
}

const METRICS: { id: HeatmapMetric; label: string; help: string }[] = [
  { id: 'loftq', label: 'LoftQ error', help: '‖W − Q − A·Bᵀ‖ / ‖W‖ after LoftQ' },
  { id: 'qlora', label: 'QLoRA error', help: '‖W − quantize(W)‖ / ‖W‖ (no LoRA correction)' },
  { id: 'ratio', label: 'Improvement', help: 'QLoRA error ÷ LoftQ error (higher: LoftQ helps more)' },
];

let entries: Entry[] = [];
let title = '';
let live = false;
let ended: 'cancelled' | 'failed' | undefined;
let state: HeatmapState = vscode.getState() ?? {};
let metric: HeatmapMetric = state.metric ?? 'loftq';
let focused: string | undefined;

function addBatch(b: HeatmapBatch): void {
  b.cells.forEach((cell, i) => {
    entries.push({ cell, loftq: b.loftq[i], qlora: b.qlora[i], perIter: b.perIter.slice(b.perIterOffsets[i], b.perIterOffsets[i + 1]) });
  });
}

const valueOf = (e: Entry) => (metric === 'loftq' ? e.loftq : metric === 'qlora' ? e.qlora : e.qlora / e.loftq);
const fmt = (v: number) => (Number.isFinite(v) ? (metric === 'ratio' ? `${v.toFixed(2)}×` : v.toFixed(4)) : '—');

function details(e: Entry | undefined): HTMLElement {
  const box = el('section', { class: 'details', 'aria-live': 'polite' });
  if (!e) {
    box.append(el('p', { class: 'hint' }, 'Hover or focus a cell for details. Enter: show its plan entry · O: add an override · V: show the tensor in the viewer · arrows: move.'));
    return box;
  }
  const c = e.cell;
  box.append(
    el('h2', { class: 'name' }, c.name),
    el('dl', {},
      el('dt', {}, 'shape'), el('dd', {}, `${c.shape[0]} × ${c.shape[1]}`),
      el('dt', {}, 'bits / rank'), el('dd', {}, `${c.bits} / ${c.rank}`),
      el('dt', {}, 'LoftQ error'), el('dd', {}, Number.isFinite(e.loftq) ? e.loftq.toFixed(5) : 'skipped'),
      el('dt', {}, 'QLoRA error'), el('dd', {}, Number.isFinite(e.qlora) ? e.qlora.toFixed(5) : '—'),
      el('dt', {}, 'improvement'), el('dd', {}, Number.isFinite(e.qlora / e.loftq) ? `${(e.qlora / e.loftq).toFixed(2)}×` : '—'),
    ),
  );
  if (e.perIter.length) box.append(el('div', { class: 'spark-label' }, `error per iteration (${e.perIter.length})`), sparkline(e.perIter));
  const act = (label: string, m: FromHeatmap) => {
    const b = el('button', { type: 'button' }, label);
    b.addEventListener('click', () => vscode.postMessage(m));
    return b;
  };
  box.append(el('div', { class: 'actions' },
    act('Show in plan', { type: 'reveal', name: c.name, createOverride: false }),
    act('Add override', { type: 'reveal', name: c.name, createOverride: true }),
    act('Show in viewer', { type: 'openTensor', name: c.name })));
  return box;
}

function showDetails(e: Entry | undefined): void {
  document.querySelector('.details')?.replaceWith(details(e));
}

function render(): void {
  const app = document.getElementById('app')!;
  const activeName = (document.activeElement as HTMLElement | null)?.dataset?.name;
  app.replaceChildren();
  app.setAttribute('aria-busy', 'false');

  const status = live ? ` — running, ${entries.length} matrices so far`
    : ended === 'cancelled' ? ` — cancelled after ${entries.length} matrices; nothing was written`
      : ended === 'failed' ? ` — failed after ${entries.length} matrices; the journal keeps them for a rerun`
        : '';
  const header = el('header', {}, el('h1', {}, title + status));
  const picker = el('div', { class: 'metrics', role: 'radiogroup', 'aria-label': 'Colour by' });
  for (const m of METRICS) {
    const b = el('button', { type: 'button', role: 'radio', 'aria-checked': String(m.id === metric), title: m.help, 'data-metric': m.id }, m.label);
    b.addEventListener('click', () => setMetric(m.id));
    picker.append(b);
  }
  header.append(picker);

  const values = Float32Array.from(entries, valueOf);
  const range = extent(values);
  const legend = el('div', { class: 'legend' },
    el('span', { class: 'lo' }, range ? fmt(range[0]) : ''),
    el('span', { class: 'bar', 'aria-hidden': 'true' }),
    el('span', { class: 'hi' }, range ? fmt(range[1]) : ''),
    el('span', { class: 'help' }, METRICS.find((m) => m.id === metric)!.help));
  (legend.querySelector('.bar') as HTMLElement).style.background = legendGradient();
  header.append(legend);
  app.append(header);

  if (!entries.length) {
    app.append(el('p', { class: 'hint' }, live ? 'Waiting for the first matrix…' : 'No quantized matrices in this report.'));
    return;
  }

  const layout = layoutTensors(entries.map((e) => e.cell.name));
  const grid = el('div', { class: 'grid', role: 'grid', 'aria-label': `LoftQ ${metric} heatmap`, 'aria-rowcount': String(layout.rows.length + 1) });
  grid.style.gridTemplateColumns = `max-content repeat(${layout.columns.length}, minmax(3.6em, 1fr))`;
  const head = el('div', { class: 'row', role: 'row' }, el('div', { class: 'corner', role: 'columnheader' }, 'layer'));
  for (const c of layout.columns) head.append(el('div', { class: 'colhead', role: 'columnheader', title: c.key }, c.label));
  grid.append(head);

  const at: (number | undefined)[][] = layout.rows.map(() => layout.columns.map(() => undefined));
  layout.cells.forEach((rc, i) => rc && (at[rc[0]][rc[1]] = i));
  const cellEls: (HTMLElement | undefined)[][] = at.map((r) => r.map(() => undefined));
  let first: HTMLElement | undefined;
  layout.rows.forEach((row, r) => {
    const line = el('div', { class: 'row', role: 'row' }, el('div', { class: 'rowhead', role: 'rowheader', title: `${row.prefix}.${row.index}` }, row.label));
    layout.columns.forEach((_, c) => {
      const i = at[r][c];
      if (i === undefined) {
        line.append(el('div', { class: 'cell empty', role: 'gridcell' }));
        return;
      }
      const e = entries[i];
      const v = values[i];
      const colour = range ? viridis((v - range[0]) / (range[1] - range[0])) : null;
      const cell = el('div', { class: 'cell', role: 'gridcell', tabindex: '-1', 'data-name': e.cell.name, 'data-value': String(v), 'data-row': String(r), 'data-col': String(c), 'aria-label': `${e.cell.name}: ${fmt(v)}` }, fmt(v));
      if (colour) {
        cell.style.background = rgb(colour);
        cell.style.color = textOn(colour);
      } else cell.classList.add('skipped');
      cell.addEventListener('mouseenter', () => showDetails(e));
      cell.addEventListener('focus', () => { focused = e.cell.name; showDetails(e); });
      cell.addEventListener('click', () => { cell.focus(); vscode.postMessage({ type: 'reveal', name: e.cell.name, createOverride: false }); });
      cellEls[r][c] = cell;
      first ??= cell;
      line.append(cell);
    });
    grid.append(line);
  });
  grid.addEventListener('keydown', (ev) => onKey(ev, cellEls));
  app.append(el('div', { class: 'body' }, grid, details(undefined)));

  if (layout.unplaced.length) {
    const list = el('table', { class: 'unplaced' }, el('caption', {}, 'Matrices outside the layer grid'),
      el('tr', {}, el('th', {}, 'tensor'), el('th', {}, 'shape'), el('th', {}, METRICS.find((m) => m.id === metric)!.label)));
    for (const i of layout.unplaced) {
      const e = entries[i];
      const tr = el('tr', { tabindex: '0', 'data-name': e.cell.name, 'data-value': String(values[i]) },
        el('td', {}, e.cell.name), el('td', {}, `${e.cell.shape[0]} × ${e.cell.shape[1]}`), el('td', {}, fmt(values[i])));
      tr.addEventListener('mouseenter', () => showDetails(e));
      tr.addEventListener('focus', () => showDetails(e));
      tr.addEventListener('click', () => vscode.postMessage({ type: 'reveal', name: e.cell.name, createOverride: false }));
      list.append(tr);
    }
    app.append(list);
  }

  // Roving tabindex: one cell in the tab order, arrows move within the grid.
  const keep = [...grid.querySelectorAll<HTMLElement>('.cell[data-name]')].find((c) => c.dataset.name === (activeName ?? focused));
  (keep ?? first)?.setAttribute('tabindex', '0');
  if (keep && activeName) keep.focus();
}

function onKey(ev: KeyboardEvent, cells: (HTMLElement | undefined)[][]): void {
  const cur = ev.target as HTMLElement;
  if (!cur.dataset.name) return;
  const name = cur.dataset.name;
  if (ev.key === 'Enter' || ev.key === ' ') return void (ev.preventDefault(), vscode.postMessage({ type: 'reveal', name, createOverride: false }));
  if (ev.key === 'o' || ev.key === 'O') return void vscode.postMessage({ type: 'reveal', name, createOverride: true });
  if (ev.key === 'v' || ev.key === 'V') return void vscode.postMessage({ type: 'openTensor', name });
  const d = ({ ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] } as Record<string, [number, number]>)[ev.key];
  if (!d) return;
  ev.preventDefault();
  let r = Number(cur.dataset.row), c = Number(cur.dataset.col);
  for (;;) {
    r += d[0];
    c += d[1];
    if (r < 0 || r >= cells.length || c < 0 || c >= cells[0].length) return;
    const next = cells[r][c];
    if (next) {
      cur.setAttribute('tabindex', '-1');
      next.setAttribute('tabindex', '0');
      next.focus();
      return;
    }
  }
}

function setMetric(m: HeatmapMetric): void {
  metric = m;
  state = { ...state, metric };
  vscode.setState(state);
  vscode.postMessage({ type: 'metric', metric });
  render();
}

window.addEventListener('message', (ev: MessageEvent<ToHeatmap>) => {
  const m = ev.data;
  if (m.type === 'init') {
    entries = [];
    title = m.title;
    live = !!m.live;
    ended = m.ended;
    if (!state.metric) metric = m.metric;
    addBatch(m);
    state = { ...state, reportPath: m.reportPath, metric };
    vscode.setState(state);
  } else if (m.type === 'append') addBatch(m);
  else if (m.type === 'matrix') {
    const x = m.matrix;
    entries.push({ cell: { name: x.name, layer: -1, module: '', shape: x.shape, bits: x.bits, rank: x.rank }, loftq: x.relError, qlora: x.qloraRelError, perIter: Float32Array.from(x.relErrorPerIter) });
  }
  render();
});

// Theme switches change body classes; colours come from --vscode-* variables and the cell
// text colour is recomputed, so redraw.
new MutationObserver(() => render()).observe(document.body, { attributes: true, attributeFilter: ['class'] });
vscode.postMessage({ type: 'ready' });
