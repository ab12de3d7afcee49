// The error-per-iteration chart in the heatmap's details: y axis with its range, x axis
// with the iteration numbers, and the iteration whose factors were kept marked.
import { keptIndex } from './keptIteration';

const SVG = 'http://www.w3.org/2000/svg';

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number>,
  text?: string,
): SVGElementTagNameMap[K] {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** `best`: MatrixReport.bestIter (1-based), when the report has it. */
export function sparkline(values: ArrayLike<number>, best?: number, width = 260, height = 110): SVGSVGElement {
  const vs = Array.from(values);
  const root = svg('svg', { class: 'spark', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img' });
  const bestIdx = keptIndex(vs.length, best);
  const label = 'kept';
  const listed = vs.map((v) => v.toFixed(4)).join(', ');
  root.setAttribute('aria-label', `error per iteration: ${listed}; ${label}: iteration ${bestIdx + 1}`);
  const left = 52,
    right = 10,
    top = 16,
    bottom = 22;
  const lo = Math.min(...vs),
    hi = Math.max(...vs);
  const w = width - left - right,
    h = height - top - bottom;
  const x = (i: number) => left + (vs.length > 1 ? (i * w) / (vs.length - 1) : w / 2);
  const y = (v: number) => top + (hi > lo ? ((hi - v) * h) / (hi - lo) : h / 2);
  root.append(
    svg('line', { class: 'spark-axis', x1: left, y1: top, x2: left, y2: top + h }),
    svg('line', { class: 'spark-axis', x1: left, y1: top + h, x2: left + w, y2: top + h }),
    svg('text', { class: 'spark-tick', x: left - 4, y: y(hi) + 4, 'text-anchor': 'end' }, hi.toFixed(4)),
  );
  if (hi > lo) {
    root.append(svg('text', { class: 'spark-tick', x: left - 4, y: y(lo) + 4, 'text-anchor': 'end' }, lo.toFixed(4)));
  }
  // Iteration numbers: all of them when they fit, else first, kept and last.
  const ticks = vs.length <= 12 ? vs.map((_, i) => i) : [...new Set([0, bestIdx, vs.length - 1])];
  for (const i of ticks) {
    root.append(svg('text', { class: 'spark-tick', x: x(i), y: height - 6, 'text-anchor': 'middle' }, String(i + 1)));
  }
  root.append(svg('text', { class: 'spark-tick', x: left + w, y: top - 5, 'text-anchor': 'end' }, 'iteration →'));
  const points = vs.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
  root.append(svg('polyline', { class: 'spark-line', points }));
  vs.forEach((v, i) => {
    const best = i === bestIdx;
    const dot = svg('circle', {
      cx: x(i).toFixed(1),
      cy: y(v).toFixed(1),
      r: best ? 4.5 : 2.5,
      class: best ? 'spark-best' : 'spark-dot',
    });
    dot.append(svg('title', {}, `iteration ${i + 1}: ${v.toFixed(5)}${i === bestIdx ? ` (${label})` : ''}`));
    root.append(dot);
  });
  const bx = x(bestIdx);
  const anchor = bx > left + w - 30 ? 'end' : bx < left + 30 ? 'start' : 'middle';
  root.append(svg('text', { class: 'spark-best-label', x: bx, y: y(vs[bestIdx]) - 8, 'text-anchor': anchor }, label));
  return root;
}
