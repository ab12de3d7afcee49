import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Group, solveMckp, totals } from '../../server/src/plan/planner/solver';

function rng(seed: number) {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

function bruteForce(groups: Group[], budget: number): number | null {
  let best: number | null = null;
  const pick = groups.map(() => 0);
  const rec = (i: number) => {
    if (i === groups.length) {
      const t = totals(groups, pick);
      if (t.cost <= budget && (best === null || t.error < best)) best = t.error;
      return;
    }
    for (let j = 0; j < groups[i].costs.length; j++) {
      pick[i] = j;
      rec(i + 1);
    }
  };
  rec(0);
  return best;
}

function instance(rand: () => number, scale: number): Group[] {
  const n = 1 + Math.floor(rand() * 6);
  return Array.from({ length: n }, () => {
    const k = 1 + Math.floor(rand() * 5);
    return {
      costs: Array.from({ length: k }, () => 1 + Math.floor(rand() * 50 * scale)),
      errors: Array.from({ length: k }, () => rand() * 100),
    };
  });
}

test('exact on small integer instances: equals brute force, gap 0', () => {
  const rand = rng(1);
  for (let t = 0; t < 400; t++) {
    const groups = instance(rand, 1);
    const budget = Math.floor(rand() * 40 * groups.length);
    const opt = bruteForce(groups, budget);
    const sol = solveMckp(groups, budget);
    if (opt === null) {
      assert.equal(sol, null, `case ${t}`);
      continue;
    }
    assert.ok(sol, `case ${t}`);
    assert.ok(sol.cost <= budget);
    assert.deepEqual(totals(groups, sol.pick), { cost: sol.cost, error: sol.error });
    assert.ok(Math.abs(sol.error - opt) <= 1e-9 * Math.max(1, opt), `case ${t}: ${sol.error} vs ${opt}`);
    assert.equal(sol.gap, 0);
  }
});

test('coarse units: the brute-force optimum lies between the reported bounds and within the gap', () => {
  const rand = rng(2);
  let positive = 0;
  for (let t = 0; t < 400; t++) {
    const groups = instance(rand, 1000);
    const budget = Math.floor(rand() * 40_000 * groups.length);
    const opt = bruteForce(groups, budget);
    const sol = solveMckp(groups, budget, { units: 8 });
    if (opt === null) {
      assert.equal(sol, null);
      continue;
    }
    assert.ok(sol && sol.cost <= budget, `case ${t}`);
    assert.ok(sol.gap >= 0);
    assert.ok(sol.lowerBound <= opt + 1e-9, `case ${t}: lower ${sol.lowerBound} > opt ${opt}`);
    assert.ok(sol.error >= opt - 1e-9, `case ${t}`);
    assert.ok(opt >= sol.error / (1 + sol.gap) - 1e-9, `case ${t}: optimum outside the gap`);
    if (sol.gap > 0) positive++;
  }
  assert.ok(positive > 0, 'some coarse cases should leave a gap (else the test does not exercise the bounds)');
});

test('seeds are never beaten downwards; infeasible budgets give null', () => {
  const groups: Group[] = [
    { costs: [5, 10], errors: [3, 1] },
    { costs: [5, 10], errors: [4, 0] },
  ];
  assert.equal(solveMckp(groups, 9), null);
  const s = solveMckp(groups, 15, { seeds: [[1, 0]] })!;
  assert.deepEqual(s.pick, [0, 1]);
  assert.equal(s.error, 3);
  assert.throws(() => solveMckp([{ costs: [], errors: [] }], 10), /at least one choice/);
});
