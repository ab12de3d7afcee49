import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { nestingDepth, parsePlan, MAX_PLAN_DEPTH } from '../../server/src/plan/planfile';
import { peftPatterns } from '../../server/src/plan/planner/peft';

test('a hostile, deeply nested plan is refused with one problem instead of overflowing the stack', () => {
  const deep = '['.repeat(200000) + ']'.repeat(200000);
  const r = parsePlan(deep);
  assert.equal(r.problems.length, 1);
  assert.match(r.problems[0].message, /nests 200000 levels deep/);
  // brackets inside strings and comments do not count
  assert.equal(nestingDepth('{"a": "[[[[", /* {{{{ */ "b": [1, {"c": 2}]} // [[['), 3);
  assert.equal(parsePlan(`{"checkpoint": "x", "defaults": {"bits": 2}}`).problems.length, 0);
  assert.ok(MAX_PLAN_DEPTH >= 8);
});

test('PEFT patterns keep a module named __proto__', () => {
  const p = peftPatterns(
    [
      { name: 'a.weight', rank: 8, alpha: 8 },
      { name: '__proto__.weight', rank: 16, alpha: 16 },
      { name: 'b.weight', rank: 8, alpha: 8 },
    ],
    8,
  );
  assert.equal(p.rank_pattern['__proto__'], 16);
  assert.deepEqual(Object.keys(p.rank_pattern), ['__proto__']);
  assert.equal(JSON.parse(JSON.stringify(p)).rank_pattern['__proto__'], 16);
});
