// adapter_config.json must load the same way in every PEFT release line (issue 13.4–13.6).
// PEFT is not available here, so each rule is emulated as PEFT's code states it
// (peft/utils/other.py get_pattern_key, first matching key in insertion order wins):
//   PEFT < 0.15:  re.match(rf".*\.{key}$", name)
//   PEFT ≥ 0.15:  re.match(rf"(.*\.)?({key})$", name)
// and checked against the adapter weights actually written: a module whose looked-up rank is
// not its lora_A's row count fails to load with a size mismatch.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { quantizeCheckpoint } from '../../server/src/engine/run';
import { openCheckpoint } from '../../server/src/checkpoint';
import { peftPatterns } from '../../server/src/plan/planner/peft';
import { repoRoot, tempDir } from '../helpers';

const STORIES = path.join(repoRoot, 'examples', 'stories260k');

const RULES = {
  'PEFT < 0.15': (key: string) => new RegExp(`^.*\\.${key}$`),
  'PEFT ≥ 0.15': (key: string) => new RegExp(`^(.*\\.)?(${key})$`),
};

function lookUp(rule: (k: string) => RegExp, pattern: Record<string, number>, fallback: number, name: string): number {
  for (const [key, v] of Object.entries(pattern)) if (rule(key).test(name)) return v;
  return fallback;
}

// LoraConfig and PeftConfig fields of PEFT 0.10 (the oldest line checked): an unknown key is a
// TypeError when the config is built there.
const PEFT_0_10_FIELDS = new Set([
  'peft_type',
  'task_type',
  'inference_mode',
  'base_model_name_or_path',
  'revision',
  'auto_mapping',
  'r',
  'target_modules',
  'lora_alpha',
  'lora_dropout',
  'fan_in_fan_out',
  'bias',
  'use_rslora',
  'modules_to_save',
  'init_lora_weights',
  'layers_to_transform',
  'layers_pattern',
  'rank_pattern',
  'alpha_pattern',
  'megatron_config',
  'megatron_core',
  'loftq_config',
  'use_dora',
  'layer_replication',
]);

test('mixed ranks: both PEFT matching rules give every wrapped module the rank of its written lora_A', async () => {
  const out = tempDir();
  await quantizeCheckpoint(STORIES, {
    out,
    workers: 1,
    settings: { bits: 2, rank: 8, iters: 1, quantizer: 'nf', blockSize: 64 },
    plan: {
      checkpoint: '.',
      defaults: { bits: 2, rank: 8, iters: 1 },
      overrides: [
        { match: 'model.layers.{0..1}.mlp.*', rank: 16 },
        { match: 'model.layers.4.self_attn.o_proj', rank: 4 },
      ],
    },
  });
  const config = JSON.parse(fs.readFileSync(path.join(out, 'loftq_init', 'adapter_config.json'), 'utf8'));
  const adapters = await openCheckpoint(path.join(out, 'loftq_init', 'adapter_model.safetensors'));
  const modules = (await openCheckpoint(STORIES)).tensors.map((t) => t.name.replace(/\.weight$/, ''));
  // PEFT wraps every module whose name is a target or ends in `.target`.
  const wrapped = modules.filter((m) => config.target_modules.some((t: string) => m === t || m.endsWith(`.${t}`)));
  assert.equal(wrapped.length, 35);
  assert.ok(Object.keys(config.rank_pattern).length >= 7, 'ranks differ, so there are pattern keys');
  for (const [label, rule] of Object.entries(RULES)) {
    for (const m of wrapped) {
      const written = adapters.byName.get(`base_model.model.${m}.lora_A.weight`)!.shape[0];
      assert.equal(lookUp(rule, config.rank_pattern, config.r, m), written, `${label}: rank of ${m}`);
      assert.equal(
        lookUp(rule, config.alpha_pattern, config.lora_alpha, m),
        written,
        `${label}: alpha of ${m} (scale 1)`,
      );
    }
  }
});

test('pattern keys are checked for ambiguity against every module name and fall back to longer suffixes', () => {
  const universe = [
    'model.layers.3.self_attn.q_proj',
    'model.layers.13.self_attn.q_proj',
    'vision.blocks.3.self_attn.q_proj',
    'model.layers.3.mlp.up_proj',
    'model.embed_tokens',
    'lm_head',
    'model.norm',
  ];
  const ranks: Record<string, number> = {
    'model.layers.3.self_attn.q_proj': 32,
    'model.layers.13.self_attn.q_proj': 8,
    'vision.blocks.3.self_attn.q_proj': 16,
    'model.layers.3.mlp.up_proj': 8,
  };
  const p = peftPatterns(
    Object.entries(ranks).map(([n, r]) => ({ name: `${n}.weight`, rank: r, alpha: r })),
    8,
    universe,
  );
  // `3.self_attn.q_proj` also ends the vision block's name, so the keys need one more segment.
  assert.deepEqual(p.rank_pattern, { 'layers\\.3\\.self_attn\\.q_proj': 32, 'blocks\\.3\\.self_attn\\.q_proj': 16 });
  for (const [label, rule] of Object.entries(RULES)) {
    for (const m of universe.filter((u) => u in ranks))
      assert.equal(lookUp(rule, p.rank_pattern, p.r, m), ranks[m], `${label}: ${m}`);
    for (const m of universe.filter((u) => !(u in ranks))) {
      assert.ok(
        Object.keys(p.rank_pattern).every((k) => !rule(k).test(m)),
        `${label}: no key matches ${m}`,
      );
    }
  }
  // A one-segment module has no suffix PEFT < 0.15 can match: its rank becomes r, so both lines agree.
  const q = peftPatterns(
    [
      { name: 'lm_head.weight', rank: 4, alpha: 4 },
      { name: 'model.layers.0.q.weight', rank: 8, alpha: 8 },
      { name: 'model.layers.1.q.weight', rank: 8, alpha: 8 },
    ],
    8,
  );
  assert.equal(q.r, 4);
  for (const [label, rule] of Object.entries(RULES)) {
    assert.equal(lookUp(rule, q.rank_pattern, q.r, 'lm_head'), 4, label);
    assert.equal(lookUp(rule, q.rank_pattern, q.r, 'model.layers.1.q'), 8, label);
  }
});

const ADAPTER_CONFIG_FIELDS =
  'adapter_config.json: base model relative to the adapter folder, no loftq_config, ' + 'only PEFT 0.10 fields';

test(ADAPTER_CONFIG_FIELDS, async () => {
  const out = tempDir();
  const { report } = await quantizeCheckpoint(STORIES, {
    out,
    workers: 1,
    settings: { bits: 3, rank: 4, iters: 2, quantizer: 'nf', blockSize: 64 },
  });
  const read = (dir: string) =>
    JSON.parse(fs.readFileSync(path.join(dir, 'loftq_init', 'adapter_config.json'), 'utf8'));
  const config = read(out);
  assert.equal(config.loftq_config, undefined, 'PEFT ≥ 0.15 warns about loftq_config beside init_lora_weights: true');
  assert.equal(config.init_lora_weights, true);
  for (const k of Object.keys(config)) assert.ok(PEFT_0_10_FIELDS.has(k), `PEFT 0.10 knows ${k}`);
  // Provenance stays in the report.
  assert.deepEqual([...new Set(report.matrices.map((m) => `${m.bits}/${m.iters}`))], ['3/2']);
  // Moved to another place, the folder still points at its own backbone.
  const moved = path.join(tempDir(), 'moved');
  fs.renameSync(out, moved);
  const base = path.resolve(moved, 'loftq_init', read(moved).base_model_name_or_path);
  assert.equal(base, moved);
  assert.ok(fs.existsSync(path.join(base, 'model.safetensors')) && fs.existsSync(path.join(base, 'config.json')));
  assert.ok(!JSON.stringify(read(moved)).includes(out), 'the machine-specific path is gone');
});
