import assert from 'node:assert/strict';
import test from 'node:test';

import { parseConfig } from '../../sidecar/src/engine/config';
import { GlanceError } from '../../sidecar/src/engine/errors';
import { generate, StopFilter, type GenerateStep, type ModelLike, type SequenceLike } from '../../sidecar/src/engine/generate';
import { createTokenizer, type Tokenizer } from '../../sidecar/src/engine/tokenizer';
import type { ModelConfig } from '../../sidecar/src/engine/types';
import { tinyConfig } from '../helpers/tiny-model';
import { tinyTokenizer } from '../helpers/tiny-tokenizer';

/** A model that deterministically emits `script` (one-hot logits), recording every forward call. */
function scriptedModel(config: ModelConfig, script: number[]): ModelLike & { calls: number[][]; created: number[] } {
  const calls: number[][] = [];
  const created: number[] = [];
  return {
    config,
    calls,
    created,
    createSequence(maxTokens?: number): SequenceLike {
      created.push(maxTokens ?? -1);
      let length = 0;
      let step = 0;
      return {
        get length() {
          return length;
        },
        forward(ids: Int32Array, allLogits: boolean): Float32Array {
          assert.equal(allLogits, false);
          calls.push(Array.from(ids));
          length += ids.length;
          const out = new Float32Array(config.vocabSize).fill(-10);
          out[script[Math.min(step, script.length - 1)]!] = 10;
          step++;
          return out;
        },
        truncate(n: number) {
          length = n;
        },
      };
    },
  };
}

function setup(): { tok: Tokenizer; config: ModelConfig } {
  const tt = tinyTokenizer();
  const tok = createTokenizer(tt.json, tt.config);
  const config = parseConfig(tinyConfig('deepseek_v3', { vocab_size: tok.vocabSize, max_position_embeddings: 64, eos_token_id: tok.eosId }), 'config.json');
  return { tok, config };
}

async function collect(gen: AsyncGenerator<GenerateStep, unknown, void>): Promise<{ steps: GenerateStep[]; result: unknown }> {
  const steps: GenerateStep[] = [];
  for (;;) {
    const r = await gen.next();
    if (r.done) return { steps, result: r.value };
    steps.push(r.value);
  }
}

test('StopFilter holds back possible stop prefixes and cuts at the stop', () => {
  const f = new StopFilter(['</end>', 'STOP']);
  assert.deepEqual(f.push('abc<'), { text: 'abc', stopped: false });
  assert.deepEqual(f.push('/e'), { text: '', stopped: false });
  assert.deepEqual(f.push('x'), { text: '</ex', stopped: false });
  assert.deepEqual(f.push('ST'), { text: '', stopped: false });
  assert.deepEqual(f.push('OP and more'), { text: '', stopped: true });
  const g = new StopFilter(['ab']);
  assert.deepEqual(g.push('xa'), { text: 'x', stopped: false });
  assert.deepEqual(g.push('', true), { text: 'a', stopped: false });
  assert.deepEqual(new StopFilter([]).push('anything'), { text: 'anything', stopped: false });
});

test('prefill once, then one token per step; text streams; eos ends it', async () => {
  const { tok, config } = setup();
  const body = tok.encode('hello world é🚀');
  const model = scriptedModel(config, [...body, tok.eosId!]);
  const prompt = tok.encode('hi');
  const { steps, result } = await collect(generate(model, tok, prompt, { maxTokens: 50, temperature: 0 }));
  assert.deepEqual(model.calls[0], prompt, 'prefill with the whole prompt');
  assert.ok(model.calls.slice(1).every((c) => c.length === 1), 'then one token at a time');
  assert.equal(model.calls.length, body.length + 1);
  assert.deepEqual(model.created, [prompt.length + 50]);
  assert.deepEqual(steps.map((s) => s.id), [...body, tok.eosId]);
  assert.equal(steps.map((s) => s.text).join(''), 'hello world é🚀');
  assert.ok(steps.every((s) => !s.text.includes('\uFFFD')));
  assert.equal(steps.at(-1)!.finishReason, 'eos');
  assert.deepEqual(result, { ids: [...body, tok.eosId], text: 'hello world é🚀', finishReason: 'eos', promptTokens: prompt.length, seed: (result as { seed: number }).seed });
});

test('stop sequences end generation and never appear in the text', async () => {
  const { tok, config } = setup();
  const model = scriptedModel(config, tok.encode('hello world hello world'));
  const { steps, result } = await collect(generate(model, tok, [1], { maxTokens: 40, temperature: 0, stop: [' wor'] }));
  assert.equal(steps.map((s) => s.text).join(''), 'hello');
  assert.equal((result as { finishReason: string }).finishReason, 'stop');
  assert.equal(steps.at(-1)!.finishReason, 'stop');
});

test('length limit flushes held-back text; the last token is not run through the model', async () => {
  const { tok, config } = setup();
  const model = scriptedModel(config, tok.encode('hello wor'));
  const n = tok.encode('hello wor').length;
  const { steps } = await collect(generate(model, tok, [1], { maxTokens: n, temperature: 0, stop: ['world'] }));
  assert.equal(steps.map((s) => s.text).join(''), 'hello wor');
  assert.equal(steps.at(-1)!.finishReason, 'length');
  assert.equal(model.calls.length, n, 'prefill + n − 1 decode steps');
});

test('without a tokenizer: ids only; stop sequences need one', async () => {
  const { config } = setup();
  const model = scriptedModel(config, [5, 6, 7]);
  const { steps } = await collect(generate(model, null, [1, 2], { maxTokens: 3, temperature: 0 }));
  assert.deepEqual(steps.map((s) => [s.id, s.text]), [[5, ''], [6, ''], [7, '']]);
  await assert.rejects(collect(generate(model, null, [1], { maxTokens: 3, stop: ['x'] })), (e: unknown) => e instanceof GlanceError && e.code === 'no_tokenizer');
});

test('input validation: ids in range, non-empty prompt, context overflow names both numbers', async () => {
  const { config } = setup();
  const model = scriptedModel(config, [5]);
  const V = config.vocabSize;
  await assert.rejects(collect(generate(model, null, [1, V], { maxTokens: 1 })), (e: unknown) => e instanceof GlanceError && e.code === 'bad_input' && new RegExp(`token id ${V} at position 1 is outside the model's vocabulary \\(0\\.\\.${V - 1}`).test(e.message));
  await assert.rejects(collect(generate(model, null, [-1], { maxTokens: 1 })), /outside the model's vocabulary/);
  await assert.rejects(collect(generate(model, null, [], { maxTokens: 1 })), /the prompt is empty/);
  await assert.rejects(collect(generate(model, null, [1], { maxTokens: -1 })), /maxTokens must be a non-negative integer/);
  await assert.rejects(
    collect(generate(model, null, new Array(20).fill(1), { maxTokens: 50 })),
    (e: unknown) => e instanceof GlanceError && e.code === 'context_overflow' && /prompt \(20 tokens\) \+ max tokens \(50\) = 70, which exceeds the model's context of 64 tokens/.test(e.message),
  );
  const zero = await collect(generate(model, null, [1], { maxTokens: 0 }));
  assert.equal(zero.steps.length, 0);
  assert.equal(model.calls.length, 0, 'nothing run for maxTokens 0');
});

test('an abort signal stops generation within one step', async () => {
  const { tok, config } = setup();
  const model = scriptedModel(config, [5, 6, 7, 8, 9, 10]);
  const ac = new AbortController();
  const ids: number[] = [];
  const gen = generate(model, tok, [1], { maxTokens: 6, temperature: 0, signal: ac.signal, stopIds: [] });
  let result: unknown;
  for (;;) {
    const r = await gen.next();
    if (r.done) {
      result = r.value;
      break;
    }
    ids.push(r.value.id);
    if (ids.length === 2) ac.abort();
  }
  assert.deepEqual(ids, [5, 6]);
  assert.equal((result as { finishReason: string }).finishReason, 'abort');
  assert.equal(model.calls.length, 2);
});
