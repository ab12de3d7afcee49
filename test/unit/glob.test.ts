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
