// Tiny DOM helpers for the webviews. Children that are strings become text nodes, so
// names from checkpoints can never inject markup.

type Child = Node | string | false | null | undefined;

export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) {
    if (c === false || c === null || c === undefined) continue;
    e.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return e;
}

const SVG = 'http://www.w3.org/2000/svg';

/** A small line chart of per-iteration errors, with the first and last values labelled. */
export function sparkline(values: ArrayLike<number>, width = 180, height = 40): SVGSVGElement {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));
  svg.setAttribute('role', 'img');
  const vs = Array.from(values);
  svg.setAttribute('aria-label', `errors per iteration: ${vs.map((v) => v.toFixed(4)).join(', ')}`);
  const lo = Math.min(...vs), hi = Math.max(...vs);
  const pad = 4;
  const x = (i: number) => pad + (vs.length > 1 ? (i * (width - 2 * pad)) / (vs.length - 1) : (width - 2 * pad) / 2);
  const y = (v: number) => pad + (hi > lo ? ((hi - v) * (height - 2 * pad)) / (hi - lo) : (height - 2 * pad) / 2);
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute('points', vs.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' '));
  line.setAttribute('class', 'spark-line');
  svg.append(line);
  vs.forEach((v, i) => {
    const dot = document.createElementNS(SVG, 'circle');
    dot.setAttribute('cx', x(i).toFixed(1));
    dot.setAttribute('cy', y(v).toFixed(1));
    dot.setAttribute('r', '2');
    dot.setAttribute('class', 'spark-dot');
    const t = document.createElementNS(SVG, 'title');
    t.textContent = `iteration ${i + 1}: ${v.toFixed(5)}`;
    dot.append(t);
    svg.append(dot);
  });
  return svg;
}
