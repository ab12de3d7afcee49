// A Thompson automaton for glob tokens, run by tracking every live state at once (no
// backtracking): each state is visited at most once per input position, so matching costs
// O(states × name length) for any pattern. A `{lo..hi}` range is one state that reads a whole
// number, so its size does not depend on the span.

import type { Token } from './globParse';

const MATCH = 0,
  CHAR = 1,
  NONDOT = 2,
  ANY = 3,
  SPLIT = 4,
  RANGE = 5;
const DOT = 46;

export interface Automaton {
  start: number;
  kind: number[];
  /** CHAR: the char code; SPLIT: first branch; RANGE: low end. */
  a: number[];
  /** CHAR/NONDOT/ANY/RANGE: next state; SPLIT: second branch. */
  b: number[];
  /** RANGE: high end. */
  hi: number[];
  mark: Int32Array;
  epoch: number;
  /** Characters every match contains, with their counts: a cheap test that rejects most names. */
  need: [number, number][];
}

interface Builder {
  kind: number[];
  a: number[];
  b: number[];
  hi: number[];
}

function add(m: Builder, kind: number, a: number, b: number, hi = 0): number {
  m.kind.push(kind);
  m.a.push(a);
  m.b.push(b);
  m.hi.push(hi);
  return m.kind.length - 1;
}

/** A loop state SPLIT(body, next) whose body is built after it (it points back at the loop). */
function loop(m: Builder, next: number, body: (self: number) => number): number {
  const self = add(m, SPLIT, -1, next);
  m.a[self] = body(self);
  return self;
}

// Built from the end backwards, so every fragment knows the state that follows it.
function sequence(m: Builder, tokens: Token[], next: number): number {
  let s = next;
  for (let k = tokens.length - 1; k >= 0; k--) s = token(m, tokens[k], s);
  return s;
}

function token(m: Builder, tok: Token, next: number): number {
  switch (tok.t) {
    case 'lit':
      return add(m, CHAR, tok.c, next);
    case 'star':
      return loop(m, next, (self) => add(m, NONDOT, 0, self));
    case 'range':
      return add(m, RANGE, tok.lo, next, tok.hi);
    case 'group': {
      const starts = tok.alts.map((alt) => sequence(m, alt, next));
      let s = starts[starts.length - 1];
      for (let k = starts.length - 2; k >= 0; k--) s = add(m, SPLIT, starts[k], s);
      return s;
    }
    case 'segs': {
      switch (tok.form) {
        case 'any':
          return loop(m, next, (self) => add(m, ANY, 0, self));
        case 'dotSegs':
          return dotSegs(m, next);
        case 'dotSegsDot':
          return dotSegs(m, add(m, CHAR, DOT, next));
        case 'segsDot':
          return loop(m, next, (self) => {
            // (?:[^.]+\.)*
            const dot = add(m, CHAR, DOT, self);
            const more = add(m, SPLIT, -1, dot);
            const seg = add(m, NONDOT, 0, more);
            m.a[more] = seg;
            return seg;
          });
      }
    }
  }
}

// (?:\.[^.]+)*
function dotSegs(m: Builder, next: number): number {
  return loop(m, next, (self) => {
    const more = add(m, SPLIT, -1, self);
    const seg = add(m, NONDOT, 0, more);
    m.a[more] = seg;
    return add(m, CHAR, DOT, seg);
  });
}

/** `bare`: the short form `q_proj`, which may follow any prefix that ends in a dot. */
export function buildAutomaton(tokens: Token[], bare: boolean): Automaton {
  const m: Builder = { kind: [], a: [], b: [], hi: [] };
  const accept = add(m, MATCH, 0, 0);
  let start = sequence(m, tokens, accept);
  if (bare) {
    const body = start;
    const dot = add(m, CHAR, DOT, body);
    const prefix = loop(m, dot, (self) => add(m, ANY, 0, self));
    start = add(m, SPLIT, body, prefix);
  }
  const need = new Map<number, number>();
  for (const t of tokens) if (t.t === 'lit') need.set(t.c, (need.get(t.c) ?? 0) + 1);
  return { start, ...m, mark: new Int32Array(m.kind.length), epoch: 0, need: [...need] };
}

/** Ends j > i such that s[i..j) is a number in [lo, hi] written as String(number) would. */
function rangeEnds(s: string, i: number, lo: number, hi: number, out: (j: number) => void): void {
  let j = i;
  if (s.charCodeAt(j) === 45 /* - */) j++;
  const digits = j;
  while (j < s.length && j - digits < 22 && s.charCodeAt(j) >= 48 && s.charCodeAt(j) <= 57) {
    j++;
    const text = s.slice(i, j);
    const v = Number(text);
    if (v >= lo && v <= hi && String(v) === text) out(j);
  }
}

function hasNeeded(g: Automaton, s: string): boolean {
  for (const [c, count] of g.need) {
    const ch = String.fromCharCode(c);
    let k = 0;
    for (let i = s.indexOf(ch); i >= 0 && k < count; i = s.indexOf(ch, i + 1)) k++;
    if (k < count) return false;
  }
  return true;
}

export function runAutomaton(g: Automaton, s: string): boolean {
  if (!hasNeeded(g, s)) return false;
  const n = s.length;
  const pending: number[][] = [[g.start]];
  let furthest = 0;
  for (let i = 0; i <= n; i++) {
    const stack = pending[i];
    if (!stack) {
      if (i > furthest) return false;
      continue;
    }
    pending[i] = undefined as unknown as number[];
    if (g.epoch >= 0x7ffffff0) {
      g.mark.fill(0);
      g.epoch = 0;
    }
    const epoch = ++g.epoch;
    const c = i < n ? s.charCodeAt(i) : -1;
    const reach = (j: number, state: number) => {
      (pending[j] ??= []).push(state);
      if (j > furthest) furthest = j;
    };
    while (stack.length) {
      const st = stack.pop()!;
      if (g.mark[st] === epoch) continue;
      g.mark[st] = epoch;
      switch (g.kind[st]) {
        case MATCH:
          if (i === n) return true;
          break;
        case SPLIT:
          stack.push(g.b[st], g.a[st]);
          break;
        case CHAR:
          if (c === g.a[st]) reach(i + 1, g.b[st]);
          break;
        case NONDOT:
          if (c >= 0 && c !== DOT) reach(i + 1, g.b[st]);
          break;
        case ANY:
          if (c >= 0) reach(i + 1, g.b[st]);
          break;
        case RANGE:
          rangeEnds(s, i, g.a[st], g.hi[st], (j) => reach(j, g.b[st]));
          break;
      }
    }
  }
  return false;
}
