// The error heatmap webview: layers × module kinds, coloured by the chosen metric, with a
// header that says what ran, row and column means, and a details pane for the hovered cell.
// Every tensor name is inserted as text — a name is data, never markup.
import './heatmap.css';
import type {
  FromHeatmap,
  HeatmapBatch,
  HeatmapCell,
  HeatmapMetric,
  HeatmapScale,
  HeatmapState,
  HeatmapSummary,
  ToHeatmap,
} from '../../server/src/protocol/lsp_ext';
import { legendGradient, OVER, rgb, textOn, UNDER } from './colormap';
import { el, nameText } from './dom';
import { header } from './header';
import { layoutTensors } from './layout';
import { gridMeans } from './means';
import {
  describe,
  direction,
  Entry as Values,
  FIXED_ERROR,
  FIXED_RATIO,
  fmtValue,
  KINDS,
  kindOf,
  metricOf,
  Space,
  spaceOf,
  valueOf,
} from './metrics';
import { ColourScale, ratioScale, sequentialScale } from './scale';
import { sparkline } from './sparkline';
import { exactLegend, exactNote } from './exact';

declare function acquireVsCodeApi(): {
  postMessage(m: FromHeatmap): void;
  getState(): HeatmapState | undefined;
  setState(s: HeatmapState): void;
};
const vscode = acquireVsCodeApi();

interface Entry extends Values {
  cell: HeatmapCell;
  perIter: Float32Array;
  bestIter: number;
}

let entries: Entry[] = [];
let title = '';
let summary: HeatmapSummary | undefined;
let live = false;
let ended: 'cancelled' | 'failed' | undefined;
let state: HeatmapState = vscode.getState() ?? {};
let metric: HeatmapMetric = state.metric ?? 'loftq';
let scaleMode: HeatmapScale = state.scale ?? 'data';
let focused: string | undefined;
/** An analysis report's widths (a switch when more than one) and the one shown. */
let widths: number[] = [];
let bits: number | undefined;

function addBatch(b: HeatmapBatch): void {
  b.cells.forEach((cell, i) => {
    entries.push({
      cell,
      loftq: b.loftq[i],
      qlora: b.qlora[i],
      output: b.output?.[i] ?? NaN,
      qloraOutput: b.qloraOutput?.[i] ?? NaN,
      perIter: b.perIter.slice(b.perIterOffsets[i], b.perIterOffsets[i + 1]),
      bestIter: b.bestIter?.[i] ?? 0,
    });
  });
}

const hasOutput = () => entries.some((e) => Number.isFinite(e.output));
/** The metric shown: output-space metrics fall back to their weight-space kind when the report has none. */
const shown = (): HeatmapMetric => (spaceOf(metric) === 'output' && !hasOutput() ? kindOf(metric) : metric);
const fmt = (v: number) => fmtValue(v, shown());

function makeScale(values: Float32Array): ColourScale | null {
  return kindOf(shown()) === 'ratio'
    ? ratioScale(values, scaleMode, FIXED_RATIO)
    : sequentialScale(values, scaleMode, FIXED_ERROR);
}

function paint(cell: HTMLElement, v: number, scale: ColourScale | null): void {
  const colour = scale?.colour(v);
  if (!colour) return void cell.classList.add('skipped');
  cell.style.background = rgb(colour);
  cell.style.color = textOn(colour);
  const o = scale!.overflow(v);
  if (o) {
    cell.classList.add(o);
    cell.title = `${o === 'over' ? 'above' : 'below'} the colour range (${fmt(scale!.lo)}–${fmt(scale!.hi)})`;
  }
}

/** The tooltip of a cell whose adapter captures its whole residual (0.0000) says why. */
function noteExact(cell: HTMLElement, c: HeatmapCell): void {
  const note = exactNote(c);
  if (note) cell.title = cell.title ? `${note}; ${cell.title}` : note;
}

function details(e: Entry | undefined): HTMLElement {
  const box = el('section', { class: 'details', 'aria-live': 'polite' });
  if (!e) {
    box.append(
      el(
        'p',
        { class: 'hint' },
        'Hover or focus a cell for details. Enter: show its plan entry · O: add an override · ' +
          'V: show the tensor in the viewer · arrows: move.',
      ),
    );
    return box;
  }
  const c = e.cell;
  const f5 = (v: number) => (Number.isFinite(v) ? v.toFixed(5) : '—');
  const ratio = (a: number, b: number) => (Number.isFinite(a / b) ? `${(a / b).toFixed(2)}×` : '—');
  const dl = el(
    'dl',
    {},
    el('dt', {}, 'shape'),
    el('dd', {}, `${c.shape[0]} × ${c.shape[1]}`),
    el('dt', {}, 'bits / rank'),
    el('dd', {}, `${c.bits} / ${c.rank}`),
    el('dt', {}, 'LoftQ error'),
    el('dd', {}, Number.isFinite(e.loftq) ? e.loftq.toFixed(5) : 'skipped'),
    el('dt', {}, 'QLoRA error'),
    el('dd', {}, f5(e.qlora)),
    el('dt', {}, 'improvement'),
    el('dd', {}, ratio(e.qlora, e.loftq)),
  );
  if (Number.isFinite(e.output)) {
    const text = `${f5(e.output)} (QLoRA ${f5(e.qloraOutput)}, ${ratio(e.qloraOutput, e.output)})`;
    dl.append(el('dt', {}, 'output error'), el('dd', {}, text));
  }
  box.append(el('h2', { class: 'name' }, nameText(c.name)), dl);
  const note = exactNote(c);
  if (note) box.append(el('p', { class: 'hint exact' }, note));
  if (e.perIter.length) {
    box.append(
      el('div', { class: 'spark-label' }, 'weight error per LoftQ iteration'),
      sparkline(e.perIter, e.bestIter || undefined),
    );
  }
  const act = (label: string, m: FromHeatmap) => {
    const b = el('button', { type: 'button' }, label);
    b.addEventListener('click', () => vscode.postMessage(m));
    return b;
  };
  box.append(
    el(
      'div',
      { class: 'actions' },
      act('Show in plan', { type: 'reveal', name: c.name, createOverride: false }),
      act('Add override', { type: 'reveal', name: c.name, createOverride: true }),
      act('Show in viewer', { type: 'openTensor', name: c.name }),
    ),
  );
  return box;
}

function showDetails(e: Entry | undefined): void {
  document.querySelector('.details')?.replaceWith(details(e));
}

interface Option<T> {
  id: T;
  label: string;
  help?: string;
}

function toggleGroup<T extends string>(
  label: string,
  options: Option<T>[],
  current: T,
  set: (v: T) => void,
  attr: string,
): HTMLElement {
  const g = el(
    'div',
    { class: 'toggle', role: 'radiogroup', 'aria-label': label },
    el('span', { class: 'toggle-label' }, `${label}:`),
  );
  for (const o of options) {
    const b = el(
      'button',
      {
        type: 'button',
        role: 'radio',
        'aria-checked': String(o.id === current),
        [attr]: o.id,
        ...(o.help && { title: o.help }),
      },
      o.label,
    );
    b.addEventListener('click', () => set(o.id));
    g.append(b);
  }
  return g;
}

function controls(): HTMLElement {
  const m = shown();
  const space = spaceOf(m);
  const bar = el('div', { class: 'controls' });
  if (widths.length > 1 && bits !== undefined) {
    const options = widths.map((b) => ({ id: String(b), label: `${b}-bit`, help: `the analysis at ${b} bits` }));
    bar.append(toggleGroup('Bit width', options, String(bits), (b) => setBits(Number(b)), 'data-bits'));
  }
  const kinds = KINDS.map((k) => {
    const id = metricOf(k.kind, space);
    return { id, label: k.label, help: describe(id) };
  });
  bar.append(toggleGroup('Colour by', kinds, m, setMetric, 'data-metric'));
  if (hasOutput()) {
    const spaces: { id: Space; label: string; help: string }[] = [
      { id: 'weight', label: 'weights', help: 'errors of the weight matrices' },
      { id: 'output', label: 'outputs', help: 'errors of the layer outputs on the calibration inputs (output error)' },
    ];
    bar.append(toggleGroup('Measured on', spaces, space, (s) => setMetric(metricOf(kindOf(m), s)), 'data-space'));
  }
  const ratio = kindOf(m) === 'ratio';
  bar.append(
    toggleGroup(
      'Range',
      [
        {
          id: 'data' as const,
          label: 'this report',
          help: 'min–max of this report; values far outside the quartiles (3 × IQR) get the overflow colour',
        },
        {
          id: 'fixed' as const,
          label: ratio
            ? `fixed ${(1 / FIXED_RATIO).toFixed(2)}×–${FIXED_RATIO}×`
            : `fixed ${FIXED_ERROR[0]}–${FIXED_ERROR[1]}`,
          help: 'the same range for every report, so maps of different runs (NF2, NF4) compare by colour',
        },
      ],
      scaleMode,
      setScale,
      'data-scale',
    ),
  );
  return bar;
}

function legend(scale: ColourScale | null): HTMLElement {
  const lg = el(
    'div',
    { class: 'legend' },
    el('span', { class: 'lo' }, scale ? fmt(scale.lo) : ''),
    el('span', { class: 'bar', 'aria-hidden': 'true' }),
    el('span', { class: 'hi' }, scale ? fmt(scale.hi) : ''),
  );
  (lg.querySelector('.bar') as HTMLElement).style.background = legendGradient(scale?.palette ?? 'sequential');
  const swatch = (n: number, colour: string | undefined, text: string, cls: string) => {
    if (!n) return;
    const s = el('span', { class: `swatch ${cls}` });
    if (colour) s.style.background = colour;
    lg.append(el('span', { class: 'overflow' }, s, text));
  };
  if (scale) {
    const seq = scale.palette === 'sequential';
    swatch(scale.over, seq ? rgb(OVER) : undefined, `${scale.over} above ${fmt(scale.hi)}`, 'over');
    swatch(scale.under, seq ? rgb(UNDER) : undefined, `${scale.under} below ${fmt(scale.lo)}`, 'under');
  }
  lg.append(el('span', { class: 'direction' }, direction(shown())), el('span', { class: 'help' }, describe(shown())));
  const exact = exactLegend(entries.map((e) => e.cell));
  if (exact) lg.append(el('span', { class: 'help exact' }, exact));
  return lg;
}

function highlight(r: number, c: number, on: boolean): void {
  document.querySelector(`.rowhead[data-row="${r}"]`)?.classList.toggle('hl', on);
  document.querySelector(`.colhead[data-col="${c}"]`)?.classList.toggle('hl', on);
}

function render(): void {
  const app = document.getElementById('app')!;
  const activeName = (document.activeElement as HTMLElement | null)?.dataset?.name;
  app.replaceChildren();
  app.setAttribute('aria-busy', 'false');
  const m = shown();

  const status = live
    ? ` — running, ${entries.length} matrices so far`
    : ended === 'cancelled'
      ? ` — cancelled after ${entries.length} matrices; nothing was written`
      : ended === 'failed'
        ? ` — failed after ${entries.length} matrices; the journal keeps them for a rerun`
        : '';
  const values = Float32Array.from(entries, (e) => valueOf(e, m));
  const scale = makeScale(values);
  const pick = (k: keyof Values) => entries.map((e) => e[k]);
  app.append(
    el(
      'header',
      {},
      el('h1', {}, title + status),
      header(
        summary,
        entries.map((e) => e.cell),
        { loftq: pick('loftq'), qlora: pick('qlora'), output: pick('output'), qloraOutput: pick('qloraOutput') },
        live ? undefined : () => vscode.postMessage({ type: 'evaluate' }),
      ),
      controls(),
      legend(scale),
    ),
  );

  if (!entries.length) {
    app.append(
      el('p', { class: 'hint' }, live ? 'Waiting for the first matrix…' : 'No quantized matrices in this report.'),
    );
    return;
  }

  const layout = layoutTensors(entries.map((e) => e.cell.name));
  const grid = el('div', {
    class: 'grid',
    role: 'grid',
    'aria-label': `LoftQ ${m} heatmap`,
    'aria-rowcount': String(layout.rows.length + 2),
  });
  // One column per module kind, then the row means.
  grid.style.gridTemplateColumns = `max-content repeat(${layout.columns.length + 1}, minmax(3.6em, 1fr))`;
  const head = el('div', { class: 'row', role: 'row' }, el('div', { class: 'corner', role: 'columnheader' }, 'layer'));
  layout.columns.forEach((c, i) => {
    head.append(el('div', { class: 'colhead', role: 'columnheader', title: c.key, 'data-col': String(i) }, c.label));
  });
  head.append(el('div', { class: 'colhead mean-head', role: 'columnheader', title: 'mean of the row' }, 'mean'));
  grid.append(head);

  const at: (number | undefined)[][] = layout.rows.map(() => layout.columns.map(() => undefined));
  layout.cells.forEach((rc, i) => rc && (at[rc[0]][rc[1]] = i));
  const means = gridMeans(at, values, kindOf(m) === 'ratio' ? 'geometric' : 'arithmetic');
  const meanCell = (v: number, what: string) => {
    const c = el(
      'div',
      {
        class: 'cell mean',
        role: 'gridcell',
        'data-mean': String(v),
        'aria-label': `${what}: ${fmt(v)}`,
      },
      fmt(v),
    );
    paint(c, v, scale);
    return c;
  };
  const cellEls: (HTMLElement | undefined)[][] = at.map((r) => r.map(() => undefined));
  let first: HTMLElement | undefined;
  layout.rows.forEach((row, r) => {
    const line = el(
      'div',
      { class: 'row', role: 'row' },
      el(
        'div',
        { class: 'rowhead', role: 'rowheader', title: `${row.prefix}.${row.index}`, 'data-row': String(r) },
        row.label,
      ),
    );
    layout.columns.forEach((_, c) => {
      const i = at[r][c];
      if (i === undefined) return void line.append(el('div', { class: 'cell empty', role: 'gridcell' }));
      const e = entries[i];
      const v = values[i];
      const cell = el(
        'div',
        {
          class: 'cell',
          role: 'gridcell',
          tabindex: '-1',
          'data-name': e.cell.name,
          'data-value': String(v),
          'data-row': String(r),
          'data-col': String(c),
          'aria-label': `${e.cell.name}: ${fmt(v)}`,
        },
        fmt(v),
      );
      paint(cell, v, scale);
      noteExact(cell, e.cell);
      cell.addEventListener('mouseenter', () => {
        cell.classList.add('current');
        highlight(r, c, true);
        showDetails(e);
      });
      cell.addEventListener('mouseleave', () => {
        cell.classList.remove('current');
        highlight(r, c, false);
      });
      cell.addEventListener('focus', () => {
        focused = e.cell.name;
        highlight(r, c, true);
        showDetails(e);
      });
      cell.addEventListener('blur', () => highlight(r, c, false));
      cell.addEventListener('click', () => {
        cell.focus();
        vscode.postMessage({ type: 'reveal', name: e.cell.name, createOverride: false });
      });
      cellEls[r][c] = cell;
      first ??= cell;
      line.append(cell);
    });
    line.append(meanCell(means.rows[r], `mean of layer ${row.label}`));
    grid.append(line);
  });
  const foot = el(
    'div',
    { class: 'row mean-row', role: 'row' },
    el('div', { class: 'rowhead mean-head', role: 'rowheader' }, 'mean'),
  );
  layout.columns.forEach((col, c) => foot.append(meanCell(means.columns[c], `mean of ${col.label}`)));
  foot.append(meanCell(means.all, 'mean of all cells'));
  grid.append(foot);
  grid.addEventListener('keydown', (ev) => onKey(ev, cellEls));
  app.append(el('div', { class: 'body' }, grid, details(undefined)));

  if (layout.unplaced.length) {
    const list = el(
      'table',
      { class: 'unplaced' },
      el('caption', {}, 'Matrices outside the layer grid'),
      el(
        'tr',
        {},
        el('th', {}, 'tensor'),
        el('th', {}, 'shape'),
        el('th', {}, KINDS.find((k) => k.kind === kindOf(m))!.label),
      ),
    );
    for (const i of layout.unplaced) {
      const e = entries[i];
      const tr = el(
        'tr',
        { tabindex: '0', 'data-name': e.cell.name, 'data-value': String(values[i]) },
        el('td', {}, nameText(e.cell.name)),
        el('td', {}, `${e.cell.shape[0]} × ${e.cell.shape[1]}`),
        el('td', {}, fmt(values[i])),
      );
      noteExact(tr, e.cell);
      tr.addEventListener('mouseenter', () => showDetails(e));
      tr.addEventListener('focus', () => showDetails(e));
      tr.addEventListener('click', () => {
        vscode.postMessage({ type: 'reveal', name: e.cell.name, createOverride: false });
      });
      list.append(tr);
    }
    app.append(list);
  }

  // Roving tabindex: one cell in the tab order, arrows move within the grid.
  const want = activeName ?? focused;
  const keep = [...grid.querySelectorAll<HTMLElement>('.cell[data-name]')].find((c) => c.dataset.name === want);
  (keep ?? first)?.setAttribute('tabindex', '0');
  if (keep && activeName) keep.focus();
}

function onKey(ev: KeyboardEvent, cells: (HTMLElement | undefined)[][]): void {
  const cur = ev.target as HTMLElement;
  if (!cur.dataset.name) return;
  const name = cur.dataset.name;
  if (ev.key === 'Enter' || ev.key === ' ') {
    ev.preventDefault();
    return void vscode.postMessage({ type: 'reveal', name, createOverride: false });
  }
  if (ev.key === 'o' || ev.key === 'O') return void vscode.postMessage({ type: 'reveal', name, createOverride: true });
  if (ev.key === 'v' || ev.key === 'V') return void vscode.postMessage({ type: 'openTensor', name });
  const moves: Record<string, [number, number]> = {
    ArrowUp: [-1, 0],
    ArrowDown: [1, 0],
    ArrowLeft: [0, -1],
    ArrowRight: [0, 1],
  };
  const d = moves[ev.key];
  if (!d) return;
  ev.preventDefault();
  let r = Number(cur.dataset.row),
    c = Number(cur.dataset.col);
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

function setBits(b: number): void {
  state = { ...state, bits: b };
  vscode.setState(state);
  vscode.postMessage({ type: 'bits', bits: b });
}

function setScale(s: HeatmapScale): void {
  scaleMode = s;
  state = { ...state, scale: s };
  vscode.setState(state);
  render();
}

window.addEventListener('message', (ev: MessageEvent<ToHeatmap>) => {
  const m = ev.data;
  if (m.type === 'init') {
    entries = [];
    title = m.title;
    summary = m.summary;
    live = !!m.live;
    ended = m.ended;
    if (!state.metric) metric = m.metric;
    widths = m.widths ?? [];
    bits = m.bits;
    addBatch(m);
    state = { ...state, reportPath: m.reportPath, metric, bits };
    vscode.setState(state);
  } else if (m.type === 'append') addBatch(m);
  else if (m.type === 'matrix') {
    const x = m.matrix;
    entries.push({
      cell: { name: x.name, layer: -1, module: '', shape: x.shape, bits: x.bits, rank: x.rank },
      loftq: x.relError,
      qlora: x.qloraRelError,
      output: x.outputRelError ?? NaN,
      qloraOutput: x.qloraOutputRelError ?? NaN,
      perIter: Float32Array.from(x.relErrorPerIter),
      bestIter: x.bestIter ?? 0,
    });
  }
  render();
});

// Theme switches change body classes; colours come from --vscode-* variables and the cell
// text colour is recomputed, so redraw.
new MutationObserver(() => render()).observe(document.body, { attributes: true, attributeFilter: ['class'] });
vscode.postMessage({ type: 'ready' });
