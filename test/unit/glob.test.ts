import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileGlob, globMatches, moduleName } from '../../server/src/plan/glob';

const m = (pattern: string, name: string) => globMatches(compileGlob(pattern), name);

test('moduleName strips only a trailing .weight', () => {
  assert.equal(moduleName('model.layers.0.mlp.down_proj.weight'), 'model.layers.0.mlp.down_proj');
  assert.equal(moduleName('model.layers.0.mlp.down_proj.bias'), 'model.layers.0.mlp.down_proj.bias');
  assert.equal(moduleName('weight'), 'weight');
});

test('* is exactly one dotted segment', () => {
  assert.ok(m('model.layers.*.mlp.down_proj', 'model.layers.17.mlp.down_proj.weight'));
  assert.ok(!m('model.layers.*.down_proj', 'model.layers.17.mlp.down_proj.weight'));
  assert.ok(!m('model.*', 'model.layers.0.mlp.down_proj.weight'));
  assert.ok(m('model.layers.1*.mlp.up_proj', 'model.layers.12.mlp.up_proj.weight'));
  assert.ok(!m('model.layers.1*.mlp.up_proj', 'model.layers.2.mlp.up_proj.weight'));
});

test('** is any number of segments, zero included', () => {
  assert.ok(m('model.**.down_proj', 'model.layers.3.mlp.down_proj.weight'));
  assert.ok(m('model.**', 'model.layers.3.mlp.down_proj.weight'));
  assert.ok(m('**.down_proj', 'model.layers.3.mlp.down_proj.weight'));
  assert.ok(m('model.**.layers.3.mlp.down_proj', 'model.layers.3.mlp.down_proj.weight'), 'zero segments');
  assert.ok(!m('model.**.q_proj', 'model.layers.3.mlp.down_proj.weight'));
  assert.ok(m('**', 'anything.at.all.weight'));
  // `**` stays on segment boundaries: "transformer.h" must not match "transformer.hx".
  assert.ok(!m('transformer.h.**', 'transformer.hx.0.attn.c_attn.weight'));
});

test('{a,b} alternatives, nested braces and dotted alternatives', () => {
  assert.ok(m('model.layers.*.self_attn.{q_proj,v_proj}', 'model.layers.0.self_attn.v_proj.weight'));
  assert.ok(!m('model.layers.*.self_attn.{q_proj,v_proj}', 'model.layers.0.self_attn.k_proj.weight'));
  assert.ok(m('model.layers.0.{mlp.down_proj,self_attn.o_proj}', 'model.layers.0.self_attn.o_proj.weight'));
  assert.ok(m('{a,{b,c}}.x', 'c.x.weight'), 'a comma inside a nested group belongs to it');
  assert.ok(m('{a,{b,c}}.x', 'a.x.weight'));
  assert.ok(!m('{a,{b,c}}.x', 'd.x.weight'));
});

test('{0..3} numeric ranges, in either order, and combined with **', () => {
  for (const i of [0, 1, 2, 3]) assert.ok(m('model.layers.{0..3}.**', `model.layers.${i}.mlp.up_proj.weight`));
  assert.ok(!m('model.layers.{0..3}.**', 'model.layers.4.mlp.up_proj.weight'));
  assert.ok(!m('model.layers.{0..3}.**', 'model.layers.13.mlp.up_proj.weight'), 'a range matches whole segments');
  assert.ok(m('model.layers.{28..31}.mlp.down_proj', 'model.layers.30.mlp.down_proj.weight'));
  assert.ok(m('model.layers.{3..1}.mlp.down_proj', 'model.layers.2.mlp.down_proj.weight'));
  assert.throws(() => compileGlob('x.{0..999999999}'), /too large/);
});

test('a bare segment name matches that last segment anywhere', () => {
  assert.ok(m('q_proj', 'model.layers.0.self_attn.q_proj.weight'));
  assert.ok(m('q_proj', 'q_proj.weight'));
  assert.ok(!m('q_proj', 'model.layers.0.self_attn.q_proj_extra.weight'));
  assert.ok(!m('proj', 'model.layers.0.self_attn.q_proj.weight'));
  assert.ok(m('c_attn', 'transformer.h.0.attn.c_attn.weight'));
  // Dots make a pattern anchored at the start.
  assert.ok(!m('self_attn.q_proj', 'model.layers.0.self_attn.q_proj.weight'));
});

test('other characters are literal and bad braces are errors', () => {
  assert.ok(!m('model.layers.0.mlp+', 'model.layers.0.mlpp.weight'));
  assert.ok(m('a(b)', 'a(b).weight'));
  assert.throws(() => compileGlob('model.{0..3'), /unclosed/);
  assert.throws(() => compileGlob('model.0}.x'), /unmatched/);
});

// The regex translation the automaton replaced, kept as an independent oracle for patterns
// small enough that backtracking does not matter.
function oracle(pattern: string): RegExp {
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  const split = (body: string) => {
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
    return [...parts, body.slice(start)];
  };
  const braces = (body: string): string => {
    const r = /^(-?\d+)\.\.(-?\d+)$/.exec(body);
    if (r) {
      const lo = Math.min(Number(r[1]), Number(r[2])),
        hi = Math.max(Number(r[1]), Number(r[2]));
      const alts: string[] = [];
      for (let i = lo; i <= hi; i++) alts.push(String(i));
      return `(?:${alts.join('|')})`;
    }
    return `(?:${split(body).map(tr).join('|')})`;
  };
  const tr = (p: string): string => {
    let out = '';
    for (let i = 0; i < p.length; i++) {
      const c = p[i];
      if (c === '*' && p[i + 1] === '*') {
        const before = out.endsWith('\\.'),
          after = p[i + 2] === '.';
        if (before && after) {
          out = out.slice(0, -2) + '(?:\\.[^.]+)*\\.';
          i += 2;
        } else if (after) {
          out += '(?:[^.]+\\.)*';
          i += 2;
        } else if (before) {
          out = out.slice(0, -2) + '(?:\\.[^.]+)*';
          i += 1;
        } else {
          out += '.*';
          i += 1;
        }
      } else if (c === '*') out += '[^.]*';
      else if (c === '{') {
        let depth = 1,
          j = i + 1;
        for (; j < p.length && depth; j++) {
          if (p[j] === '{') depth++;
          else if (p[j] === '}') depth--;
        }
        out += braces(p.slice(i + 1, j - 1));
        i = j - 1;
      } else out += esc(c);
    }
    return out;
  };
  const bare = /^[A-Za-z0-9_\-]+$/.test(pattern);
  return new RegExp(bare ? `^(?:.*\\.)?${tr(pattern)}$` : `^${tr(pattern)}$`);
}

test('the automaton agrees with a regex translation on 20,000 random small patterns and names', () => {
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const pieces = ['a', 'b', '1', '.', '*', '**', '{a,b}', '{,a}', '{1..12}', '{a.b,*}', '-', '{-2..3}'];
  const chars = ['a', 'b', '.', '1', '2', '0', '-', 'ab'];
  let matched = 0;
  for (let k = 0; k < 20_000; k++) {
    let p = '';
    for (let n = 1 + rnd(5); n > 0; n--) p += pieces[rnd(pieces.length)];
    let name = '';
    for (let n = rnd(7); n > 0; n--) name += chars[rnd(chars.length)];
    const want = oracle(p).test(name);
    assert.equal(m(p, name), want, `pattern ${JSON.stringify(p)} on ${JSON.stringify(name)}`);
    if (want) matched++;
  }
  assert.ok(matched > 1000, `enough positive cases (${matched})`);
});

test('pathological globs match in linear time and huge expansions are refused (issue 14.6)', () => {
  const name = 'model.layers.0.self_attn.q_proj'.repeat(8);
  const t0 = Date.now();
  assert.ok(!m('********************X', name));
  assert.ok(!m('**.'.repeat(12) + 'X', name));
  assert.ok(!m('*'.repeat(5000) + 'X', name));
  assert.ok(m('*'.repeat(5000) + 'q_proj', name), 'still matches when the end fits');
  assert.ok(m('{0..100000}.**', '99999.x'));
  assert.ok(!m('{0..100000}.**', '100001.x'));
  assert.ok(!m('{,}*'.repeat(2000) + 'X', name));
  // Backtracking took 67 s for the first pattern and 848 s for the second; the bound is generous.
  assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
  const t1 = Date.now();
  assert.throws(() => compileGlob('x.{0..100000}'.repeat(100)), /more than 200000 alternatives/);
  assert.throws(() => compileGlob(`${'{a,'.repeat(100_000)}b${'}'.repeat(100_000)}`), /nested deeper than 32/);
  assert.throws(() => compileGlob(`{${'a,'.repeat(300_000)}b}`), /more than 200000 alternatives/);
  assert.ok(Date.now() - t1 < 5000, `refusing took ${Date.now() - t1} ms`);
});
