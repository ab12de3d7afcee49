// Parses a glob (syntax in glob.ts) into tokens. Nothing is expanded: a `{0..100000}` range is
// one token, and the limits below are checked while parsing, so a hostile pattern costs at
// most its own length in work and memory before it is refused with a SyntaxError.

export const GLOB_LIMITS = {
  /** Numbers one `{a..b}` range may span. */
  rangeSpan: 100_000,
  /** Alternatives of all `{…}` groups of one pattern together, ranges counted by their span. */
  alternatives: 200_000,
  /** Nesting depth of `{…}` groups. */
  braceDepth: 32,
};

export type Token =
  | { t: 'lit'; c: number }
  /** `*`: any run of non-dot characters. */
  | { t: 'star' }
  /** `**` between dots or at an edge; see `dstar` in translate(). */
  | { t: 'segs'; form: 'any' | 'dotSegs' | 'segsDot' | 'dotSegsDot' }
  | { t: 'group'; alts: Token[][] }
  | { t: 'range'; lo: number; hi: number };

const DOT = 46;

interface Budget {
  alternatives: number;
  pattern: string;
}

function spend(b: Budget, n: number): void {
  b.alternatives += n;
  if (b.alternatives > GLOB_LIMITS.alternatives) {
    throw new SyntaxError(`pattern has more than ${GLOB_LIMITS.alternatives} alternatives`);
  }
}

function parseRange(body: string, b: Budget): Token | null {
  const range = /^(-?\d+)\.\.(-?\d+)$/.exec(body);
  if (!range) return null;
  const a = Number(range[1]),
    z = Number(range[2]);
  const lo = Math.min(a, z),
    hi = Math.max(a, z);
  if (hi - lo > GLOB_LIMITS.rangeSpan) throw new SyntaxError(`range {${body.slice(0, 40)}} is too large`);
  spend(b, hi - lo + 1);
  return { t: 'range', lo, hi };
}

// Commas inside nested braces belong to the inner group: `{a,{b,c}}` has two alternatives.
function splitTopLevel(body: string): string[] {
  const parts: string[] = [];
  let depth = 0,
    start = 0;
  for (let i = 0; i < body.length; i++) {
    if (body[i] === '{') depth++;
    else if (body[i] === '}') depth--;
    else if (body[i] === ',' && depth === 0) {
      parts.push(body.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(body.slice(start));
  return parts;
}

// Adjacent `*` / bare `**` match what one of them matches ([^.]*[^.]* = [^.]*, and .* absorbs
// both), so a run of stars becomes one token: `********************X` costs as much as `*X`.
function mergeStars(out: Token[]): void {
  const isStar = (t: Token | undefined) => t !== undefined && (t.t === 'star' || (t.t === 'segs' && t.form === 'any'));
  while (out.length >= 2 && isStar(out[out.length - 1]) && isStar(out[out.length - 2])) {
    const b = out.pop()!,
      a = out.pop()!;
    out.push(a.t === 'star' && b.t === 'star' ? a : { t: 'segs', form: 'any' });
  }
}

function translate(p: string, b: Budget, depth: number): Token[] {
  if (depth > GLOB_LIMITS.braceDepth) throw new SyntaxError(`braces nested deeper than ${GLOB_LIMITS.braceDepth}`);
  const out: Token[] = [];
  const lastIsDot = () => {
    const l = out[out.length - 1];
    return l !== undefined && l.t === 'lit' && l.c === DOT;
  };
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === '*' && p[i + 1] === '*') {
      // `**.` / `.**` / `**`: zero or more whole segments (the dots around it become part of it)
      const before = lastIsDot();
      const after = p[i + 2] === '.';
      if (before) out.pop();
      out.push({ t: 'segs', form: before && after ? 'dotSegsDot' : after ? 'segsDot' : before ? 'dotSegs' : 'any' });
      mergeStars(out);
      i += after ? 2 : 1;
    } else if (c === '*') {
      out.push({ t: 'star' });
      mergeStars(out);
    } else if (c === '{') {
      let level = 1,
        j = i + 1;
      for (; j < p.length && level; j++) {
        if (p[j] === '{') level++;
        else if (p[j] === '}') level--;
      }
      if (level) throw new SyntaxError(`unclosed '{' in pattern '${b.pattern.slice(0, 80)}'`);
      const body = p.slice(i + 1, j - 1);
      const range = parseRange(body, b);
      if (range) out.push(range);
      else {
        const alts = splitTopLevel(body);
        spend(b, alts.length);
        out.push({ t: 'group', alts: alts.map((alt) => translate(alt, b, depth + 1)) });
      }
      i = j - 1;
    } else if (c === '}') {
      throw new SyntaxError(`unmatched '}' in pattern '${b.pattern.slice(0, 80)}'`);
    } else {
      out.push({ t: 'lit', c: p.charCodeAt(i) });
    }
  }
  return out;
}

export function parseGlob(pattern: string): Token[] {
  // The brace scan in translate() reads each level's text again, so depth is checked before
  // anything else: a deep pattern is refused after one linear pass.
  let depth = 0;
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] === '{' && ++depth > GLOB_LIMITS.braceDepth) {
      throw new SyntaxError(`braces nested deeper than ${GLOB_LIMITS.braceDepth}`);
    } else if (pattern[i] === '}') depth--;
  }
  return translate(pattern, { alternatives: 0, pattern }, 0);
}
