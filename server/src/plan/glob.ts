// Glob patterns over dotted module names (tensor name without `.weight`):
//   `*` one dotted segment (no dots), `**` any number of segments (zero included),
//   `{a,b}` alternatives, `{0..3}` numeric ranges; everything else literal.
// A pattern without dots or wildcards matching a whole segment (e.g. `q_proj`) is the
// usual "target module" short form and matches any name ending in that segment.

export interface CompiledGlob {
  source: string;
  regex: RegExp;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

function expandBraces(body: string): string {
  const range = /^(-?\d+)\.\.(-?\d+)$/.exec(body);
  if (range) {
    const a = Number(range[1]), b = Number(range[2]);
    const lo = Math.min(a, b), hi = Math.max(a, b);
    if (hi - lo > 100000) throw new SyntaxError(`range {${body}} is too large`);
    const alts: string[] = [];
    for (let i = lo; i <= hi; i++) alts.push(String(i));
    return `(?:${alts.join('|')})`;
  }
  return `(?:${splitTopLevel(body).map((alt) => translate(alt)).join('|')})`;
}

// Commas inside nested braces belong to the inner group: `{a,{b,c}}` has two alternatives.
function splitTopLevel(body: string): string[] {
  const parts: string[] = [];
  let depth = 0, start = 0;
  for (let i = 0; i < body.length; i++) {
    if (body[i] === '{') depth++;
    else if (body[i] === '}') depth--;
    else if (body[i] === ',' && depth === 0) { parts.push(body.slice(start, i)); start = i + 1; }
  }
  parts.push(body.slice(start));
  return parts;
}

function translate(p: string): string {
  let out = '';
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === '*' && p[i + 1] === '*') {
      // `**.` / `.**` / `**`: zero or more whole segments
      const before = out.endsWith('\\.');
      const after = p[i + 2] === '.';
      if (before && after) { out = out.slice(0, -2) + '(?:\\.[^.]+)*\\.'; i += 2; }
      else if (after) { out += '(?:[^.]+\\.)*'; i += 2; }
      else if (before) { out = out.slice(0, -2) + '(?:\\.[^.]+)*'; i += 1; }
      else { out += '.*'; i += 1; }
    } else if (c === '*') {
      out += '[^.]*';
    } else if (c === '{') {
      let depth = 1, j = i + 1;
      for (; j < p.length && depth; j++) { if (p[j] === '{') depth++; else if (p[j] === '}') depth--; }
      if (depth) throw new SyntaxError(`unclosed '{' in pattern '${p}'`);
      out += expandBraces(p.slice(i + 1, j - 1));
      i = j - 1;
    } else if (c === '}') {
      throw new SyntaxError(`unmatched '}' in pattern '${p}'`);
    } else {
      out += escapeRe(c);
    }
  }
  return out;
}

export function compileGlob(pattern: string): CompiledGlob {
  const bare = /^[A-Za-z0-9_\-]+$/.test(pattern);
  const body = translate(pattern);
  const regex = new RegExp(bare ? `^(?:.*\\.)?${body}$` : `^${body}$`);
  return { source: pattern, regex };
}

/** Module name of a tensor: its name without a trailing `.weight`. */
export function moduleName(tensorName: string): string {
  return tensorName.endsWith('.weight') ? tensorName.slice(0, -'.weight'.length) : tensorName;
}

export function globMatches(g: CompiledGlob, tensorName: string): boolean {
  return g.regex.test(moduleName(tensorName));
}
