import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { groupOverrides, NamedChoice } from '../../server/src/plan/planner/group';
import { applyPlanToText, replacedOverrides } from '../../server/src/plan/planner/planedit';
import type { PlanBudget } from '../../server/src/protocol/lsp_ext';
import { peftPatterns } from '../../server/src/plan/planner/peft';
import { compilePlan, parsePlan, settingsFor } from '../../server/src/plan/planfile';

/** The plan change as one edit over the smallest differing span (what an LSP TextEdit would carry). */
function planFileEdit(text: string, choices: NamedChoice[], budget?: PlanBudget) {
  const next = applyPlanToText(text, choices, budget);
  let a = 0;
  while (a < text.length && a < next.length && text[a] === next[a]) a++;
  let b = 0;
  const tail = (k: number) => text[text.length - 1 - k] === next[next.length - 1 - k];
  while (b < text.length - a && b < next.length - a && tail(b)) b++;
  return { offset: a, length: text.length - a - b, content: next.slice(a, next.length - b) };
}

const MODS = ['self_attn.q_proj', 'self_attn.v_proj', 'mlp.down_proj'];

function choicesFor(layers: number, f: (l: number, m: string) => [number, number]): NamedChoice[] {
  const out: NamedChoice[] = [];
  for (let l = 0; l < layers; l++)
    for (const m of MODS) {
      const [bits, rank] = f(l, m);
      out.push({ name: `model.layers.${l}.${m}.weight`, bits, rank });
    }
  return out;
}

/** Every matrix gets exactly its planned bits and rank when the overrides are applied by the plan-file engine. */
function assertReproduces(planText: string, choices: NamedChoice[]) {
  const { plan, problems } = parsePlan(planText);
  assert.deepEqual(problems, []);
  const cp = compilePlan(plan);
  for (const c of choices) {
    const s = settingsFor(cp, c.name);
    assert.ok(s, c.name);
    assert.deepEqual([s.bits, s.rank], [c.bits, c.rank], c.name);
  }
}

test('consecutive layers sharing a choice become {a..b} ranges; modules with the same range merge', () => {
  const choices = choicesFor(8, (l, m) => (l < 4 ? [4, 16] : m === 'mlp.down_proj' && l === 6 ? [3, 8] : [2, 16]));
  const ov = groupOverrides(choices);
  assert.deepEqual(ov, [
    { match: 'model.layers.{0..3}.{mlp.down_proj,self_attn.q_proj,self_attn.v_proj}', bits: 4, rank: 16 },
    { match: 'model.layers.{4..5}.mlp.down_proj', bits: 2, rank: 16 },
    { match: 'model.layers.{4..7}.{self_attn.q_proj,self_attn.v_proj}', bits: 2, rank: 16 },
    { match: 'model.layers.6.mlp.down_proj', bits: 3, rank: 8 },
    { match: 'model.layers.7.mlp.down_proj', bits: 2, rank: 16 },
  ]);
  const text = JSON.stringify({ checkpoint: 'm', overrides: ov });
  assertReproduces(text, choices);
  // absorbing the common choice into defaults leaves only the rest
  assert.deepEqual(
    groupOverrides(choices, { bits: 2, rank: 16 }).map((o) => o.match),
    ['model.layers.{0..3}.{mlp.down_proj,self_attn.q_proj,self_attn.v_proj}', 'model.layers.6.mlp.down_proj'],
  );
});

test('grouping reproduces random plans exactly, including names without a layer number', () => {
  let s = 5;
  const rand = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  for (let t = 0; t < 30; t++) {
    const choices = choicesFor(12, () => [[2, 4][Math.floor(rand() * 2)], [8, 16][Math.floor(rand() * 2)]]);
    choices.push(
      { name: 'lm_head.weight', bits: 8, rank: 8 },
      { name: 'net.0.weight', bits: 3, rank: 8 },
      { name: 'net.1.weight', bits: 3, rank: 8 },
    );
    const ov = groupOverrides(choices);
    assert.ok(ov.length < choices.length);
    assertReproduces(JSON.stringify({ checkpoint: 'm', overrides: ov }), choices);
  }
});

const PLAN = `// my plan for the 7B model
{
    "checkpoint": "../ckpt", // relative to this file
    "defaults": { "iters": 5 },
    /* user overrides */
    "overrides": [
        { "match": "**.q_proj", "bits": 8 },            // old bits-only override: superseded
        { "match": "**.v_proj", "iters": 10, "rank": 32 } // keeps iters
    ],
    "targets": ["q_proj", "v_proj", "down_proj"]
}
`;

test('plan-file edit keeps comments, formatting and unrelated keys, and reproduces the plan', () => {
  const choices = choicesFor(8, (l) => (l < 2 ? [4, 16] : [2, 8]));
  const out = applyPlanToText(PLAN, choices, { avgBits: 2.5 });
  assert.equal(
    out,
    `// my plan for the 7B model
{
    "checkpoint": "../ckpt", // relative to this file
    "defaults": { "iters": 5, "bits": 2, "rank": 8 },
    /* user overrides */
    "overrides": [
        { "match": "**.v_proj", "iters": 10 }, // keeps iters
        { "match": "model.layers.{0..1}.{mlp.down_proj,self_attn.q_proj,self_attn.v_proj}", "bits": 4, "rank": 16 }
    ],
    "targets": ["q_proj", "v_proj", "down_proj"],
    "budget": { "avgBits": 2.5 }
}
`,
  );
  assertReproduces(out, choices);
  // applying the same plan again changes nothing
  assert.equal(applyPlanToText(out, choices, { avgBits: 2.5 }), out);
  // the single-edit form produces the same text and leaves the head and tail alone
  const e = planFileEdit(PLAN, choices, { avgBits: 2.5 });
  assert.equal(PLAN.slice(0, e.offset) + e.content + PLAN.slice(e.offset + e.length), out);
  assert.ok(e.offset > 0 && e.offset + e.length < PLAN.length);
  // a plan that is all one choice leaves no planner overrides and no trailing comma
  const flat = applyPlanToText(
    PLAN,
    choices.map((c) => ({ ...c, bits: 3, rank: 16 })),
  );
  assert.match(flat, /"overrides": \[\n {8}\{ "match": "\*\*\.v_proj", "iters": 10 \} \/\/ keeps iters\n {4}\],/);
  assertReproduces(
    flat,
    choices.map((c) => ({ ...c, bits: 3, rank: 16 })),
  );
  // CRLF files stay CRLF
  const crlf = applyPlanToText(PLAN.replace(/\n/g, '\r\n'), choices, { avgBits: 2.5 });
  assert.equal(crlf, out.replace(/\n/g, '\r\n'));
});

test('plan-file edit on a minimal file creates defaults and overrides; bad files are refused', () => {
  const choices = choicesFor(3, (l, m) => (m === 'mlp.down_proj' ? [4, 16] : [2, 16]));
  const out = applyPlanToText('{\n  "checkpoint": "m.safetensors"\n}\n', choices, { bytes: 1000 });
  assert.equal(
    out,
    `{
  "checkpoint": "m.safetensors",
  "defaults": { "bits": 2, "rank": 16 },
  "overrides": [
    { "match": "model.layers.{0..2}.mlp.down_proj", "bits": 4, "rank": 16 }
  ],
  "budget": { "bytes": 1000 }
}
`,
  );
  assertReproduces(out, choices);
  assert.deepEqual(parsePlan(out).plan.budget, { bytes: 1000 });
  assert.throws(() => applyPlanToText('[1, 2]', choices), /JSON object/);
});

test('PEFT rank_pattern / alpha_pattern list exactly the modules that differ from r / lora_alpha', () => {
  const m = (l: number, rank: number, alpha = rank) => ({
    name: `model.layers.${l}.self_attn.q_proj.weight`,
    rank,
    alpha,
  });
  const p = peftPatterns([m(0, 16), m(1, 16), m(2, 64), m(3, 8, 16)], 16);
  assert.equal(p.r, 16);
  assert.equal(p.lora_alpha, 16);
  // Shortest suffixes that end no other module's name (PEFT < 0.15 needs a dot before the key).
  assert.deepEqual(p.rank_pattern, { '2\\.self_attn\\.q_proj': 64, '3\\.self_attn\\.q_proj': 8 });
  assert.deepEqual(p.alpha_pattern, { '2\\.self_attn\\.q_proj': 64 });
  // PEFT's matching rules, ≥ 0.15 re.match(r"(.*\.)?(KEY)$", name) and < 0.15 re.match(r".*\.KEY$", name):
  // each key matches its own module only
  const names = [
    'model.layers.2.self_attn.q_proj',
    'model.layers.12.self_attn.q_proj',
    'base.model.layers.3.self_attn.q_proj',
    'model.layers.3.self_attn.q_projX',
  ];
  for (const rule of [(k: string) => `^(.*\\.)?(${k})$`, (k: string) => `^.*\\.${k}$`]) {
    const hits = names.map((n) => Object.keys(p.rank_pattern).filter((k) => new RegExp(rule(k)).test(n)).length);
    assert.deepEqual(hits, [1, 0, 1, 0]);
  }
  // uniform ranks: empty patterns; the most common rank wins over the default
  assert.deepEqual(peftPatterns([m(0, 8), m(1, 8)], 16), { r: 8, lora_alpha: 8, rank_pattern: {}, alpha_pattern: {} });
});

test("the planner's edit keeps the user's overrides it agrees with, and names the ones it replaces", () => {
  const choices = choicesFor(4, (l, m) => (m === 'mlp.down_proj' && l === 3 ? [4, 16] : [2, 16]));
  const text = `{
  "checkpoint": "m",
  "overrides": [
    { "match": "model.layers.3.mlp.down_proj", "bits": 4 },
    { "match": "model.layers.0.self_attn.q_proj", "bits": 8 },
    { "match": "model.layers.1.self_attn.v_proj", "rank": 64, "iters": 9 },
    { "match": "lm_head", "bits": 8 }
  ]
}
`;
  const out = applyPlanToText(text, choices, { avgBits: 2.5 });
  const { plan } = parsePlan(out);
  // The hand-made 4-bit override of layer 3's down_proj is what the planner chose too: it stays, in place.
  assert.deepEqual(plan.overrides![0], { match: 'model.layers.3.mlp.down_proj', bits: 4 });
  // An override of matrices the plan does not quantize is not the planner's to change.
  assert.ok(plan.overrides!.some((o) => o.match === 'lm_head' && o.bits === 8));
  // The disagreeing ones lose their bits/rank (the entry with other keys keeps them).
  assert.ok(!plan.overrides!.some((o) => o.match === 'model.layers.0.self_attn.q_proj'));
  assert.deepEqual(
    plan.overrides!.find((o) => o.match === 'model.layers.1.self_attn.v_proj'),
    { match: 'model.layers.1.self_attn.v_proj', iters: 9 },
  );
  assertReproduces(out, choices);
  assert.deepEqual(replacedOverrides(text, choices), [
    "'model.layers.0.self_attn.q_proj' bits 8 → 2 (1 matrix)",
    "'model.layers.1.self_attn.v_proj' rank 64 → 16 (1 matrix)",
  ]);
  // Once applied, applying it again changes and replaces nothing.
  assert.equal(applyPlanToText(out, choices, { avgBits: 2.5 }), out);
  assert.deepEqual(replacedOverrides(out, choices), []);
});
