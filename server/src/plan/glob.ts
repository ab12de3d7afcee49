// Glob patterns over dotted module names (tensor name without `.weight`):
//   `*` one dotted segment (no dots), `**` any number of segments (zero included),
//   `{a,b}` alternatives, `{0..3}` numeric ranges; everything else literal.
// A pattern without dots or wildcards matching a whole segment (e.g. `q_proj`) is the
// usual "target module" short form and matches any name ending in that segment.
//
// Plans come from the workspace, so a pattern is hostile input. It is compiled to an automaton
// (globAutomaton.ts) and matched by simulating all its states at once: time is linear in
// pattern length × name length, whatever the pattern. A backtracking regex took minutes for
// `********************X`, and expanding `{0..100000}` a hundred times took gigabytes.

import { Token, parseGlob } from './globParse';
import { Automaton, buildAutomaton, runAutomaton } from './globAutomaton';

export { GLOB_LIMITS } from './globParse';

export interface CompiledGlob {
  source: string;
  automaton: Automaton;
}

export function compileGlob(pattern: string): CompiledGlob {
  const bare = /^[A-Za-z0-9_\-]+$/.test(pattern);
  const tokens: Token[] = parseGlob(pattern);
  return { source: pattern, automaton: buildAutomaton(tokens, bare) };
}

/** Module name of a tensor: its name without a trailing `.weight`. */
export function moduleName(tensorName: string): string {
  return tensorName.endsWith('.weight') ? tensorName.slice(0, -'.weight'.length) : tensorName;
}

export function globMatches(g: CompiledGlob, tensorName: string): boolean {
  return runAutomaton(g.automaton, moduleName(tensorName));
}
