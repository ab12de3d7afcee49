// Which heatmap cell each tensor goes in: rows are transformer layers, columns are module
// kinds. DOM-free and import-free so the extension host, the webview and the unit tests
// share one answer. Names vary by family (Llama `model.layers.17.self_attn.q_proj`, GPT-2
// `transformer.h.0.attn.c_attn`, BERT `bert.encoder.layer.0.attention.self.query`, T5
// `encoder.block.0.layer.0.SelfAttention.q`), so nothing here is keyed to one of them.

export interface LayoutRow {
  /** Dotted path before the layer index (`model.layers`, `encoder.block`). */
  prefix: string;
  index: number;
  label: string;
}

export interface LayoutColumn {
  /** Module path after the layer index, without `.weight` (sub-layer numbers removed when unambiguous). */
  key: string;
  label: string;
}

export interface HeatmapLayout {
  rows: LayoutRow[];
  columns: LayoutColumn[];
  /** One entry per input name: its [row, column], or null when it fits no grid. */
  cells: ([number, number] | null)[];
  /** Input indices that fit no grid, in input order. */
  unplaced: number[];
}

interface Parsed {
  prefix: string;
  index: number;
  rest: string[];
}

const NUMERIC = /^\d+$/;

/** Splits `a.layers.17.mlp.down_proj.weight` into prefix `a.layers`, 17, [mlp, down_proj]. */
export function parseLayerName(name: string): Parsed | null {
  const segs = name.split('.');
  if (segs[segs.length - 1] === 'weight' && segs.length > 1) segs.pop();
  for (let i = 1; i < segs.length - 1; i++) {
    if (NUMERIC.test(segs[i]))
      return { prefix: segs.slice(0, i).join('.'), index: Number(segs[i]), rest: segs.slice(i + 1) };
  }
  return null;
}

// Conventional order of projections inside a block, across families; unknown kinds go last.
const CANONICAL = [
  'q',
  'q_proj',
  'query',
  'query_proj',
  'wq',
  'k',
  'k_proj',
  'key',
  'key_proj',
  'wk',
  'v',
  'v_proj',
  'value',
  'value_proj',
  'wv',
  'qkv',
  'qkv_proj',
  'c_attn',
  'query_key_value',
  'wqkv',
  'o',
  'o_proj',
  'out_proj',
  'wo_attn',
  'dense',
  'gate',
  'gate_proj',
  'w1',
  'wi',
  'wi_0',
  'wi_1',
  'fc1',
  'c_fc',
  'up',
  'up_proj',
  'gate_up_proj',
  'dense_h_to_4h',
  'w3',
  'down',
  'down_proj',
  'fc2',
  'c_proj',
  'dense_4h_to_h',
  'wo',
  'w2',
];

function canonicalRank(seg: string): number {
  const i = CANONICAL.indexOf(seg.toLowerCase());
  return i < 0 ? CANONICAL.length : i;
}

/** 0 attention in, 1 attention out, 2 other (MLP), 3 other output — BERT's `attention.output` after
 *  `attention.self`. */
function family(key: string): number {
  const segs = key.split('.');
  const attn = segs.some((s) => /att/i.test(s));
  const out = segs.slice(0, -1).some((s) => /^out(put)?$/i.test(s)) || /^out_proj$/i.test(segs[segs.length - 1]);
  return (attn ? 0 : 2) + (out ? 1 : 0);
}

// `q_proj` reads as `q` where that stays unique; `c_proj` must not become `c`.
const PROJ_SHORT = new Set([
  'q',
  'k',
  'v',
  'o',
  'qkv',
  'gate',
  'up',
  'down',
  'out',
  'in',
  'query',
  'key',
  'value',
  'dense',
]);

/** Shortest dotted suffix of each key that no other key shares; `_proj` dropped when still unique. */
function shortLabels(keys: string[]): string[] {
  const segsOf = keys.map((k) => k.split('.'));
  const suffix = (s: string[], n: number) => s.slice(Math.max(0, s.length - n)).join('.');
  const labels = segsOf.map((segs, i) => {
    for (let n = 1; n < segs.length; n++) {
      const mine = suffix(segs, n);
      if (!segsOf.some((o, j) => j !== i && suffix(o, n) === mine)) return mine;
    }
    return keys[i];
  });
  return labels.map((l) => {
    const short = l.replace(/_proj$/, '');
    return short !== l && PROJ_SHORT.has(short) && !labels.includes(short) ? short : l;
  });
}

export function layoutTensors(names: readonly string[]): HeatmapLayout {
  const parsed = names.map(parseLayerName);

  // Column key: the path after the layer index without sub-layer numbers (T5's `layer.0`),
  // unless dropping them would put two tensors of one row in one cell (MoE `experts.3`).
  const stripped = parsed.map((p) => (p ? p.rest.filter((s) => !NUMERIC.test(s)).join('.') : ''));
  const seen = new Map<string, number>();
  parsed.forEach((p, i) => {
    if (!p) return;
    const k = `${p.prefix}\u0000${p.index}\u0000${stripped[i]}`;
    seen.set(k, (seen.get(k) ?? 0) + 1);
  });
  const colKey = parsed.map((p, i) => {
    if (!p) return '';
    const clash = (seen.get(`${p.prefix}\u0000${p.index}\u0000${stripped[i]}`) ?? 0) > 1;
    return clash || stripped[i] === '' ? p.rest.join('.') : stripped[i];
  });

  // Rows: stacks (prefixes) in order of first appearance, then layer index.
  const prefixOrder: string[] = [];
  const rowKeys = new Map<string, { prefix: string; index: number }>();
  parsed.forEach((p) => {
    if (!p || p.rest.length === 0) return;
    if (!prefixOrder.includes(p.prefix)) prefixOrder.push(p.prefix);
    rowKeys.set(`${p.prefix}\u0000${p.index}`, { prefix: p.prefix, index: p.index });
  });
  const rowList = [...rowKeys.values()].sort(
    (a, b) => prefixOrder.indexOf(a.prefix) - prefixOrder.indexOf(b.prefix) || a.index - b.index,
  );
  const oneStack = prefixOrder.length <= 1;
  const rows: LayoutRow[] = rowList.map((r) => ({
    ...r,
    label: oneStack ? String(r.index) : `${r.prefix} ${r.index}`,
  }));
  const rowIndex = new Map(rowList.map((r, i) => [`${r.prefix}\u0000${r.index}`, i]));

  // Columns: attention before MLP, grouped by parent module, then conventional order.
  const firstSeen = new Map<string, number>();
  const parentSeen = new Map<string, number>();
  colKey.forEach((k, i) => {
    if (!parsed[i] || !k) return;
    if (!firstSeen.has(k)) firstSeen.set(k, i);
    const parent = k.split('.').slice(0, -1).join('.');
    if (!parentSeen.has(parent)) parentSeen.set(parent, i);
  });
  const colKeys = [...firstSeen.keys()].sort((a, b) => {
    const pa = a.split('.'),
      pb = b.split('.');
    return (
      family(a) - family(b) ||
      parentSeen.get(pa.slice(0, -1).join('.'))! - parentSeen.get(pb.slice(0, -1).join('.'))! ||
      canonicalRank(pa[pa.length - 1]) - canonicalRank(pb[pb.length - 1]) ||
      firstSeen.get(a)! - firstSeen.get(b)!
    );
  });
  const labels = shortLabels(colKeys);
  const columns: LayoutColumn[] = colKeys.map((key, i) => ({ key, label: labels[i] }));
  const colIndex = new Map(colKeys.map((k, i) => [k, i]));

  const cells: ([number, number] | null)[] = [];
  const unplaced: number[] = [];
  parsed.forEach((p, i) => {
    if (!p || !colKey[i]) {
      cells.push(null);
      unplaced.push(i);
      return;
    }
    cells.push([rowIndex.get(`${p.prefix}\u0000${p.index}`)!, colIndex.get(colKey[i])!]);
  });
  return { rows, columns, cells, unplaced };
}
