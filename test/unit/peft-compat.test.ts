// adapter_config.json must load the same way in every PEFT release line (issue 13.4–13.6).
// PEFT is not available here, so each rule is emulated as PEFT's code states it
// (peft/utils/other.py get_pattern_key, first matching key in insertion order wins):
//   PEFT < 0.15:  re.match(rf".*\.{key}$", name)
//   PEFT ≥ 0.15:  re.match(rf"(.*\.)?({key})$", name)
// and checked against the adapter weights actually written: a module whose looked-up rank is
// not its lora_A's row count fails to load with a size mismatch.
// target_modules is one regular expression; every PEFT line from 0.10 on wraps a module when
// re.fullmatch(target_modules, name) (peft/tuners/tuners_utils.py check_target_module_exists).
// The module set it selects must be exactly the adapted one (issue 27.13), checked with Python's
// own `re` where python3 is installed.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { quantizeCheckpoint } from '../../server/src/engine/run';
import { openCheckpoint } from '../../server/src/checkpoint';
import { peftPatterns } from '../../server/src/plan/planner/peft';
import { targetModulesRegex } from '../../server/src/export/adapterConfig';
import { repoRoot, tempDir } from '../helpers';

/** PEFT's rule for a string target_modules: re.fullmatch over the full module name. */
const fullmatch = (target: string, name: string) => new RegExp(`^(?:${target})$`).test(name);

/** The names Python's re.fullmatch(target, name) accepts, or undefined without python3. */
function pythonFullmatch(target: string, names: string[]): string[] | undefined {
  const code =
    'import json,re,sys\nd=json.load(sys.stdin)\nprint(json.dumps([n for n in d[1] if re.fullmatch(d[0], n)]))';
  const r = spawnSync('python3', ['-c', code], { input: JSON.stringify([target, names]), encoding: 'utf8' });
  return r.status === 0 ? JSON.parse(r.stdout) : undefined;
}

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
  // PEFT wraps every module whose name target_modules fullmatches.
  assert.equal(typeof config.target_modules, 'string');
  const wrapped = modules.filter((m) => fullmatch(config.target_modules, m));
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
  'adapter_config.json: the output folder as the base model, no loftq_config, ' + 'only PEFT 0.10 fields';

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
  // The output folder's absolute path (PEFT's convention): transformers resolves a relative one
  // against the working directory, so from any other directory `..` named another model (issue 27.14).
  assert.equal(config.base_model_name_or_path, path.resolve(out));
  assert.ok(path.isAbsolute(config.base_model_name_or_path));
  for (const cwd of ['/', path.join(out, 'loftq_init'), repoRoot]) {
    const base = path.resolve(cwd, config.base_model_name_or_path);
    assert.equal(base, out, `resolved from ${cwd}`);
  }
  assert.ok(fs.existsSync(path.join(out, 'model.safetensors')) && fs.existsSync(path.join(out, 'config.json')));
  // Moved, the folder names a path that holds nothing — never a different model — and loads with
  // PeftModel.from_pretrained(base, DIR/loftq_init), which does not read it (README).
  const parent = tempDir();
  const moved = path.join(parent, 'moved');
  fs.renameSync(out, moved);
  assert.ok(!fs.existsSync(read(moved).base_model_name_or_path));
  fs.rmSync(parent, { recursive: true, force: true });
});

test('target_modules selects exactly the adapted modules when a plan skips some (every PEFT line)', async () => {
  const out = tempDir();
  await quantizeCheckpoint(STORIES, {
    out,
    workers: 1,
    settings: { bits: 4, rank: 4, iters: 1, quantizer: 'nf', blockSize: 64 },
    plan: {
      checkpoint: '.',
      defaults: { bits: 4, rank: 4, iters: 1 },
      overrides: [
        { match: 'model.layers.2.self_attn.o_proj', skip: true },
        { match: 'model.layers.{0..1}.mlp.down_proj', skip: true },
        { match: 'model.layers.4.**', skip: true },
      ],
    },
  });
  const config = JSON.parse(fs.readFileSync(path.join(out, 'loftq_init', 'adapter_config.json'), 'utf8'));
  const adapters = await openCheckpoint(path.join(out, 'loftq_init', 'adapter_model.safetensors'));
  const adapted = [...adapters.byName.keys()]
    .filter((n) => n.endsWith('.lora_A.weight'))
    .map((n) => n.slice('base_model.model.'.length, -'.lora_A.weight'.length))
    .sort();
  assert.equal(adapted.length, 35 - 1 - 2 - 7);
  // Every module of the model, the skipped o_proj of layer 2 among them (a list of suffixes wrapped it).
  const modules = (await openCheckpoint(STORIES)).tensors.map((t) => t.name.replace(/\.weight$/, ''));
  const wrapped = modules.filter((m) => fullmatch(config.target_modules, m)).sort();
  assert.deepEqual(wrapped, adapted);
  assert.ok(!wrapped.includes('model.layers.2.self_attn.o_proj'));
  const py = pythonFullmatch(config.target_modules, modules);
  if (py) assert.deepEqual(py.sort(), adapted, "Python's re.fullmatch agrees");
  fs.rmSync(out, { recursive: true, force: true });
});

test('targetModulesRegex: exactly its names among near misses, odd characters literal, in JS and Python', () => {
  const names = [
    'model.layers.1.self_attn.q_proj',
    'model.layers.10.self_attn.q_proj',
    'model.layers.2.mlp.down_proj',
    'lm_head',
    'transformer.h.0.attn.c_attn',
    'odd(name)+x.3.a*b',
    'we|ird.0',
    'x.0.y.1.z',
  ];
  const misses = [
    'model.layers.0.self_attn.q_proj',
    'model.layers.100.self_attn.q_proj',
    'model.layers.1.self_attn.q_projX',
    'model.layers.1.mlp.down_proj',
    'model.layers.2.self_attn.q_proj',
    'model_layers.1.self_attn.q_proj',
    'xlm_head',
    'oddXnameX+x.3.a*b',
    'odd(name)x.3.aab',
    'we',
    'ird.0',
    'x.0.y.2.z',
    'vision.model.layers.1.self_attn.q_proj',
  ];
  const re = targetModulesRegex(names);
  for (const n of names) assert.ok(fullmatch(re, n), `${n} matched by ${re}`);
  for (const n of misses) assert.ok(!fullmatch(re, n), `${n} not matched by ${re}`);
  // A whole model's layers share one alternation: compact for every size.
  const big = Array.from({ length: 80 }, (_, l) =>
    ['q_proj', 'k_proj', 'v_proj', 'o_proj'].map((p) => `model.layers.${l}.self_attn.${p}`),
  ).flat();
  assert.ok(targetModulesRegex(big).length < 500, targetModulesRegex(big));
  const py = pythonFullmatch(re, [...names, ...misses]);
  if (py) assert.deepEqual(py.sort(), [...names].sort(), "Python's re.fullmatch agrees");
});
