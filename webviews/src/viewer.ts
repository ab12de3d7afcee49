// The safetensors viewer webview: metadata, totals per dtype, a module tree (layers →
// modules) beside a sortable, filterable tensor table in natural order, and LoftQ error
// columns when a report exists. Names render as text only.
import './viewer.css';
import type {
  FromViewer,
  InspectResult,
  TensorSummary,
  ToViewer,
  ViewerOrigin,
  ViewerShard,
} from '../../server/src/protocol/lsp_ext';
import { originNote } from './originNote';
import { el, nameText } from './dom';
import { buildModuleTree, TreeNode } from './moduleTree';
import { naturalCompare } from '../../server/src/base/naturalSort';

declare function acquireVsCodeApi(): {
  postMessage(m: FromViewer): void;
  getState(): ViewState | undefined;
  setState(s: ViewState): void;
};
const vscode = acquireVsCodeApi();

type Header = Extract<ToViewer, { type: 'header' }>;
type Key = 'name' | 'dtype' | 'shape' | 'parameters' | 'bytes' | 'loftq' | 'qlora' | 'bits';
interface ViewState {
  sort: Key;
  desc: boolean;
  filter: string;
  /** Tree node whose subtree the table shows ('' = everything). */
  scope?: string;
  /** Tree nodes the user opened or closed (path → open). */
  open?: Record<string, boolean>;
}

let data: Header | undefined;
let view: ViewState = { sort: 'name', desc: false, filter: '', ...vscode.getState() };
let selected: string | undefined;

const save = () => vscode.setState(view);
const nf = new Intl.NumberFormat('en-US');
function bytes(n: number): string {
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) ((n /= 1024), i++);
  return `${i ? n.toFixed(1) : n} ${u[i]}`;
}

function sortValue(t: TensorSummary, k: Key): number | string {
  const e = data?.errors?.[t.name];
  switch (k) {
    case 'name':
    case 'dtype':
      return t[k];
    case 'shape':
      return t.shape.reduce((a, b) => a * b, 1);
    case 'parameters':
    case 'bytes':
      return t[k];
    default:
      return e ? e[k] : -Infinity;
  }
}

function button(id: string, label: string, m: FromViewer, primary = false): HTMLButtonElement {
  const b = el('button', { type: 'button', id, ...(primary && { class: 'primary' }) }, label);
  b.addEventListener('click', () => vscode.postMessage(m));
  return b;
}

/** Quantize only for a file that reads as a checkpoint and is no LoftQ output; "Reopen as text" always. */
function toolbar(readable: boolean, shard?: ViewerShard, origin?: ViewerOrigin): HTMLElement {
  const bar = el('div', { class: 'toolbar' });
  const label = shard ? 'Quantize the whole checkpoint with LoftQ' : 'Quantize with LoftQ';
  if (readable && !origin) bar.append(button('quantize', label, { type: 'quantize' }, true));
  bar.append(button('reopen', 'Reopen as text', { type: 'reopenAsText' }));
  return bar;
}

function shardNote(s: ViewerShard, quantizable: boolean): HTMLElement {
  const link = el('a', { href: '#', id: 'open-index' }, s.index.split(/[\\/]/).pop() ?? s.index);
  link.addEventListener('click', (ev) => {
    ev.preventDefault();
    vscode.postMessage({ type: 'openIndex' });
  });
  return el(
    'p',
    { class: 'shard-note', role: 'note' },
    `Shard ${s.number} of ${s.of} of a sharded checkpoint (${nf.format(s.tensors)} tensors in all, listed in `,
    link,
    `).${quantizable ? ' Quantize works on the whole checkpoint.' : ''}`,
  );
}

function treeView(root: TreeNode): HTMLElement {
  const open = view.open ?? {};
  const label = (n: TreeNode) => {
    const b = el(
      'button',
      { type: 'button', class: 'node', 'data-path': n.path, title: n.path },
      el('span', { class: 'label' }, n.label),
    );
    if (n.children.length) b.append(el('span', { class: 'badge' }, nf.format(n.tensors)));
    if ((n.tensor === undefined ? view.scope : selected) === n.path) b.classList.add('active');
    b.addEventListener('click', (ev) => {
      ev.preventDefault();
      if (n.children.length) setScope(view.scope === n.path ? '' : n.path);
      else select(n.path);
    });
    return b;
  };
  const build = (n: TreeNode, depth: number): HTMLElement => {
    if (!n.children.length) return el('li', { role: 'treeitem', 'data-path': n.path }, label(n));
    // Layers and deeper start closed; the top two levels open.
    const isOpen = open[n.path] ?? depth < 2;
    const d = el(
      'details',
      isOpen ? { open: '' } : {},
      el('summary', {}, label(n)),
      el('ul', { role: 'group' }, ...n.children.map((c) => build(c, depth + 1))),
    );
    d.addEventListener('toggle', () => {
      view = { ...view, open: { ...view.open, [n.path]: d.open } };
      save();
    });
    return el('li', { role: 'treeitem', 'data-path': n.path, 'aria-expanded': String(isOpen) }, d);
  };
  return el(
    'nav',
    { class: 'tree', 'aria-label': 'Module tree' },
    el('div', { class: 'tree-title' }, 'Modules'),
    el('ul', { role: 'tree' }, ...root.children.map((c) => build(c, 0))),
  );
}

function render(): void {
  const app = document.getElementById('app')!;
  app.setAttribute('aria-busy', 'false');
  if (!data) return;
  const ins: InspectResult = data.inspect;
  const errors = data.errors;
  const files = ins.files.length > 1 ? `${ins.files.length} shards` : (ins.files[0]?.split(/[\\/]/).pop() ?? '');
  app.replaceChildren(
    el(
      'header',
      {},
      el('h1', {}, files),
      el(
        'p',
        { class: 'summary' },
        `${nf.format(ins.totals.tensors)} tensors · ${nf.format(ins.totals.parameters)} parameters · ` +
          `${bytes(ins.totals.bytes)}` +
          `${errors ? ` · LoftQ errors for ${Object.keys(errors).length} matrices` : ''}`,
      ),
      data.origin && el('p', { class: 'origin-note', role: 'note' }, originNote(data.origin)),
      ins.shard && shardNote(ins.shard, !data.origin),
      toolbar(true, ins.shard, data.origin),
    ),
  );

  const dt = el(
    'table',
    { class: 'dtypes' },
    el('caption', {}, 'Totals per dtype'),
    el(
      'tr',
      {},
      el('th', {}, 'dtype'),
      el('th', { class: 'num' }, 'tensors'),
      el('th', { class: 'num' }, 'parameters'),
      el('th', { class: 'num' }, 'bytes'),
    ),
  );
  for (const [d, v] of Object.entries(ins.totals.byDtype)) {
    dt.append(
      el(
        'tr',
        {},
        el('td', {}, d),
        el('td', { class: 'num' }, nf.format(v.tensors)),
        el('td', { class: 'num' }, nf.format(v.parameters)),
        el('td', { class: 'num' }, bytes(v.bytes)),
      ),
    );
  }
  const meta = Object.entries(ins.metadata);
  const mt = el('table', { class: 'metadata' }, el('caption', {}, meta.length ? 'Metadata' : 'Metadata (none)'));
  for (const [k, v] of meta) mt.append(el('tr', {}, el('th', {}, k), el('td', {}, v)));
  app.append(el('div', { class: 'side' }, dt, mt));

  app.append(treeView(buildModuleTree(ins.tensors)));

  const filter = el('input', {
    type: 'search',
    placeholder: 'Filter tensors (name or dtype)',
    'aria-label': 'Filter tensors',
    value: view.filter,
    id: 'filter',
  });
  filter.addEventListener('input', () => {
    view = { ...view, filter: filter.value };
    save();
    fillRows(tbody, count);
  });
  const cols: [Key, string, boolean][] = [
    ['name', 'name', false],
    ['dtype', 'dtype', false],
    ['shape', 'shape', false],
    ['parameters', 'parameters', true],
    ['bytes', 'bytes', true],
  ];
  if (errors) cols.push(['bits', 'bits', true], ['loftq', 'LoftQ error', true], ['qlora', 'QLoRA error', true]);
  const headRow = el('tr', {});
  for (const [k, label, num] of cols) {
    const sorted = view.sort === k;
    const b = el('button', { type: 'button', class: 'sort' }, label + (sorted ? (view.desc ? ' ▼' : ' ▲') : ''));
    b.addEventListener('click', () => {
      view = { ...view, sort: k, desc: view.sort === k ? !view.desc : num };
      save();
      render();
    });
    const ariaSort = sorted ? (view.desc ? 'descending' : 'ascending') : 'none';
    headRow.append(el('th', { 'aria-sort': ariaSort, class: `${num ? 'num' : ''} col-${k}` }, b));
  }
  const tbody = el('tbody', {});
  const count = el('span', { class: 'count' });
  const bar = el('div', { class: 'filterbar' }, filter, count);
  if (view.scope) {
    const chip = el('button', { type: 'button', class: 'scope', title: 'Show every tensor' }, `in ${view.scope} ✕`);
    chip.addEventListener('click', () => setScope(''));
    bar.append(chip);
  }
  app.append(
    el('section', { class: 'tensors' }, bar, el('table', { class: 'tensor-table' }, el('thead', {}, headRow), tbody)),
  );
  fillRows(tbody, count);
}

function fillRows(tbody: HTMLElement, count: HTMLElement): void {
  if (!data) return;
  const q = view.filter.trim().toLowerCase();
  const scope = view.scope;
  const rows = data.inspect.tensors.filter(
    (t) =>
      (!scope || t.name === scope || t.name.startsWith(`${scope}.`)) &&
      (!q || t.name.toLowerCase().includes(q) || t.dtype.toLowerCase() === q),
  );
  const dir = view.desc ? -1 : 1;
  const cmp = (x: number | string, y: number | string) =>
    typeof x === 'string' && typeof y === 'string' ? naturalCompare(x, y) : x < y ? -1 : x > y ? 1 : 0;
  rows.sort((a, b) => cmp(sortValue(a, view.sort), sortValue(b, view.sort)) * dir || naturalCompare(a.name, b.name));
  count.textContent = `${rows.length} of ${data.inspect.tensors.length}`;
  tbody.replaceChildren(
    ...rows.map((t) => {
      const e = data!.errors?.[t.name];
      const tr = el(
        'tr',
        { 'data-name': t.name, class: t.name === selected ? 'selected' : '' },
        el('td', { class: 'name' }, nameText(t.name)),
        el('td', {}, t.dtype),
        el('td', {}, `[${t.shape.join(', ')}]`),
        el('td', { class: 'num' }, nf.format(t.parameters)),
        el('td', { class: 'num' }, nf.format(t.bytes)),
      );
      if (data!.errors) {
        tr.append(
          el('td', { class: 'num' }, e ? String(e.bits) : ''),
          el('td', { class: 'num' }, e ? e.loftq.toFixed(5) : ''),
          el('td', { class: 'num' }, e ? e.qlora.toFixed(5) : ''),
        );
      }
      return tr;
    }),
  );
}

function setScope(scope: string): void {
  view = { ...view, scope };
  save();
  render();
}

function select(name: string): void {
  selected = name;
  if (view.filter && !name.toLowerCase().includes(view.filter.toLowerCase())) view = { ...view, filter: '' };
  if (view.scope && !name.startsWith(`${view.scope}.`)) view = { ...view, scope: '' };
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
    data = undefined;
    const app = document.getElementById('app')!;
    app.setAttribute('aria-busy', 'false');
    app.replaceChildren(
      el(
        'header',
        {},
        el('h1', {}, 'This file cannot be read as a safetensors checkpoint'),
        el('p', { class: 'error', role: 'alert' }, m.message),
        toolbar(false),
      ),
    );
  }
});
vscode.postMessage({ type: 'ready' });
