// The safetensors viewer webview: metadata, a sortable and filterable tensor table, totals
// per dtype, and LoftQ error columns when a report exists. Names render as text only.
import './viewer.css';
import type { FromViewer, InspectResult, ToViewer, TensorSummary } from '../../server/src/protocol/lsp_ext';
import { el } from './dom';

declare function acquireVsCodeApi(): { postMessage(m: FromViewer): void; getState(): ViewState | undefined; setState(s: ViewState): void };
const vscode = acquireVsCodeApi();

type Header = Extract<ToViewer, { type: 'header' }>;
type Key = 'name' | 'dtype' | 'shape' | 'parameters' | 'bytes' | 'loftq' | 'qlora' | 'bits';
interface ViewState { sort: Key; desc: boolean; filter: string }

let data: Header | undefined;
let view: ViewState = vscode.getState() ?? { sort: 'name', desc: false, filter: '' };
let selected: string | undefined;

const nf = new Intl.NumberFormat('en-US');
function bytes(n: number): string {
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) (n /= 1024), i++;
  return `${i ? n.toFixed(1) : n} ${u[i]}`;
}

function sortValue(t: TensorSummary, k: Key): number | string {
  const e = data?.errors?.[t.name];
  switch (k) {
    case 'name': case 'dtype': return t[k];
    case 'shape': return t.shape.reduce((a, b) => a * b, 1);
    case 'parameters': case 'bytes': return t[k];
    default: return e ? e[k] : -Infinity;
  }
}

function buttons(): HTMLElement {
  const q = el('button', { type: 'button', class: 'primary', id: 'quantize' }, 'Quantize with LoftQ');
  q.addEventListener('click', () => vscode.postMessage({ type: 'quantize' }));
  const t = el('button', { type: 'button', id: 'reopen' }, 'Reopen as text');
  t.addEventListener('click', () => vscode.postMessage({ type: 'reopenAsText' }));
  return el('div', { class: 'toolbar' }, q, t);
}

function render(): void {
  const app = document.getElementById('app')!;
  app.setAttribute('aria-busy', 'false');
  if (!data) return;
  const ins: InspectResult = data.inspect;
  const errors = data.errors;
  const files = ins.files.length > 1 ? `${ins.files.length} shards` : ins.files[0]?.split(/[\\/]/).pop() ?? '';
  app.replaceChildren(
    el('header', {}, el('h1', {}, files), el('p', { class: 'summary' },
      `${nf.format(ins.totals.tensors)} tensors · ${nf.format(ins.totals.parameters)} parameters · ${bytes(ins.totals.bytes)}${errors ? ` · LoftQ errors for ${Object.keys(errors).length} matrices` : ''}`), buttons()),
  );

  const dt = el('table', { class: 'dtypes' }, el('caption', {}, 'Totals per dtype'), el('tr', {}, el('th', {}, 'dtype'), el('th', {}, 'tensors'), el('th', {}, 'parameters'), el('th', {}, 'bytes')));
  for (const [d, v] of Object.entries(ins.totals.byDtype)) dt.append(el('tr', {}, el('td', {}, d), el('td', { class: 'num' }, nf.format(v.tensors)), el('td', { class: 'num' }, nf.format(v.parameters)), el('td', { class: 'num' }, bytes(v.bytes))));
  const meta = Object.entries(ins.metadata);
  const mt = el('table', { class: 'metadata' }, el('caption', {}, meta.length ? 'Metadata' : 'Metadata (none)'));
  for (const [k, v] of meta) mt.append(el('tr', {}, el('th', {}, k), el('td', {}, v)));
  app.append(el('div', { class: 'side' }, dt, mt));

  const filter = el('input', { type: 'search', placeholder: 'Filter tensors (name or dtype)', 'aria-label': 'Filter tensors', value: view.filter, id: 'filter' });
  filter.addEventListener('input', () => {
    view = { ...view, filter: filter.value };
    vscode.setState(view);
    fillRows(tbody, count);
  });
  const cols: [Key, string, boolean][] = [['name', 'name', false], ['dtype', 'dtype', false], ['shape', 'shape', false], ['parameters', 'parameters', true], ['bytes', 'bytes', true]];
  if (errors) cols.push(['bits', 'bits', true], ['loftq', 'LoftQ error', true], ['qlora', 'QLoRA error', true]);
  const headRow = el('tr', {});
  for (const [k, label, num] of cols) {
    const sorted = view.sort === k;
    const b = el('button', { type: 'button', class: 'sort' }, label + (sorted ? (view.desc ? ' ▼' : ' ▲') : ''));
    b.addEventListener('click', () => {
      view = { ...view, sort: k, desc: view.sort === k ? !view.desc : num };
      vscode.setState(view);
      render();
    });
    headRow.append(el('th', { 'aria-sort': sorted ? (view.desc ? 'descending' : 'ascending') : 'none', class: num ? 'num' : '' }, b));
  }
  const tbody = el('tbody', {});
  const count = el('span', { class: 'count' });
  app.append(el('section', { class: 'tensors' }, el('div', { class: 'filterbar' }, filter, count), el('table', { class: 'tensor-table' }, el('thead', {}, headRow), tbody)));
  fillRows(tbody, count);
}

function fillRows(tbody: HTMLElement, count: HTMLElement): void {
  if (!data) return;
  const q = view.filter.trim().toLowerCase();
  const rows = data.inspect.tensors.filter((t) => !q || t.name.toLowerCase().includes(q) || t.dtype.toLowerCase() === q);
  const dir = view.desc ? -1 : 1;
  rows.sort((a, b) => {
    const x = sortValue(a, view.sort), y = sortValue(b, view.sort);
    return (x < y ? -1 : x > y ? 1 : 0) * dir || a.name.localeCompare(b.name);
  });
  count.textContent = `${rows.length} of ${data.inspect.tensors.length}`;
  tbody.replaceChildren(...rows.map((t) => {
    const e = data!.errors?.[t.name];
    const tr = el('tr', { 'data-name': t.name, class: t.name === selected ? 'selected' : '' },
      el('td', { class: 'name' }, t.name), el('td', {}, t.dtype), el('td', {}, `[${t.shape.join(', ')}]`),
      el('td', { class: 'num' }, nf.format(t.parameters)), el('td', { class: 'num' }, nf.format(t.bytes)));
    if (data!.errors) tr.append(el('td', { class: 'num' }, e ? String(e.bits) : ''), el('td', { class: 'num' }, e ? e.loftq.toFixed(5) : ''), el('td', { class: 'num' }, e ? e.qlora.toFixed(5) : ''));
    return tr;
  }));
}

function select(name: string): void {
  selected = name;
  if (view.filter && !name.toLowerCase().includes(view.filter.toLowerCase())) view = { ...view, filter: '' };
  render();
  const row = [...document.querySelectorAll<HTMLElement>('tr[data-name]')].find((r) => r.dataset.name === name);
  row?.scrollIntoView({ block: 'center' });
}

window.addEventListener('message', (ev: MessageEvent<ToViewer>) => {
  const m = ev.data;
  if (m.type === 'header') {
    data = m;
    render();
  } else if (m.type === 'select') select(m.name);
  else if (m.type === 'error') {
    const app = document.getElementById('app')!;
    app.setAttribute('aria-busy', 'false');
    app.replaceChildren(el('p', { class: 'error', role: 'alert' }, m.message), buttons());
  }
});
vscode.postMessage({ type: 'ready' });
