// adapter_config.json's task_type from config.json's architectures (issue 26 §3: GPT-2 outputs
// had task_type null, so PEFT's AutoPeftModelForCausalLM refused them).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { taskTypeOf } from '../../server/src/export/adapterConfig';

test('task_type by architecture: GPT-2 and its kin are causal LMs', () => {
  const cases: [string, string | null][] = [
    ['GPT2LMHeadModel', 'CAUSAL_LM'],
    ['OpenAIGPTLMHeadModel', 'CAUSAL_LM'],
    ['LlamaForCausalLM', 'CAUSAL_LM'],
    ['T5WithLMHeadModel', 'SEQ_2_SEQ_LM'],
    ['T5ForConditionalGeneration', 'SEQ_2_SEQ_LM'],
    ['BertForSequenceClassification', 'SEQ_CLS'],
    ['GPT2Model', null],
  ];
  for (const [arch, want] of cases) assert.equal(taskTypeOf({ architectures: [arch] }), want, arch);
  assert.equal(taskTypeOf(undefined), null);
  assert.equal(taskTypeOf({}), null);
});
