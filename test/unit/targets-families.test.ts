// The default targets quantize every family's linear layers (issue 25): each decoder layer's
// matrices of the fixtures' checkpoints, under their own names (Phi-3's fused ones included),
// and nothing else (embeddings, norms, lm_head).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { fixture } from '../helpers';
import { openCheckpoint } from '../../server/src/checkpoint';
import { selectTargets } from '../../server/src/engine/targets';

const EXPECTED: Record<string, string[]> = {
  llama3: [
    'self_attn.q_proj',
    'self_attn.k_proj',
    'self_attn.v_proj',
    'self_attn.o_proj',
    'mlp.gate_proj',
    'mlp.up_proj',
    'mlp.down_proj',
  ],
  gemma2: [
    'self_attn.q_proj',
    'self_attn.k_proj',
    'self_attn.v_proj',
    'self_attn.o_proj',
    'mlp.gate_proj',
    'mlp.up_proj',
    'mlp.down_proj',
  ],
  phi3: ['self_attn.qkv_proj', 'self_attn.o_proj', 'mlp.gate_up_proj', 'mlp.down_proj'],
  phi: ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.dense', 'mlp.fc1', 'mlp.fc2'],
};

test('default targets: every decoder linear of each family, by its own name, and nothing else', async () => {
  for (const [family, modules] of Object.entries(EXPECTED)) {
    const ck = await openCheckpoint(fixture('arch', family, 'model.safetensors'));
    const layers = new Set(ck.tensors.map((t) => /^model\.layers\.(\d+)\./.exec(t.name)?.[1]).filter(Boolean));
    const want = [...layers].flatMap((l) => modules.map((m) => `model.layers.${l}.${m}.weight`)).sort();
    assert.deepEqual(
      selectTargets(ck.tensors)
        .map((t) => t.name)
        .sort(),
      want,
      family,
    );
  }
});
