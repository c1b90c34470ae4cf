// The embedded default model (models/glance-tiny): it loads, completes TypeScript, and our engine computes the
// same logits as the PyTorch training code on the exported FP8 checkpoint (reference made by training/eval.py).

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import test from 'node:test';

import { repositoryFrame } from '../../sidecar/src/context/prompts';
import { generate } from '../../sidecar/src/engine/generate';
import { loadModel } from '../../sidecar/src/engine/model';
import { loadTokenizer } from '../../sidecar/src/engine/tokenizer';
import { argmax, decodeF32, fixturesDir, relativeError } from '../helpers/golden';

const modelDir = path.resolve(fixturesDir(), '..', '..', 'models', 'glance-tiny');

interface RefRow {
  last_logits_f32_b64: string;
  last_argmax: number;
}
interface RefSeq {
  name: string;
  ids: number[];
  dense: RefRow;
  sparse: RefRow;
}



const reference = JSON.parse(fs.readFileSync(path.join(fixturesDir(), 'glance-tiny-reference.json'), 'utf8')) as {
  sequences: RefSeq[];
};

test('glance-tiny: dense logits equal PyTorch on the exported FP8 weights', async () => {
  // fp32 latent cache: the reference is fp32 math (a bfloat16 checkpoint otherwise gets HF's bf16 cache rows)
  const model = await loadModel(modelDir, { attention: 'dense', kvCache: 'fp32' });
  for (const s of reference.sequences) {
    const ours = model.createSequence().forward(Int32Array.from(s.ids), false);
    const ref = decodeF32(s.dense.last_logits_f32_b64);
    const err = relativeError(ours, ref);
    assert.ok(err <= 1e-4, `${s.name}: relative error ${err.toExponential(3)}`);
    assert.equal(argmax(ours), s.dense.last_argmax, s.name);
  }
});

test('glance-tiny: sparse (DSA) logits agree with PyTorch', async () => {
  // The exact (fp32) indexer; the reference records rows whose top-k cut falls on tied scores (ReLU zeros),
  // where either choice is right, so the bound is looser than for dense attention.
  const model = await loadModel(modelDir, { attention: 'sparse', indexerPrecision: 'fp32', kvCache: 'fp32' });
  for (const s of reference.sequences) {
    const ours = model.createSequence().forward(Int32Array.from(s.ids), false);
    const err = relativeError(ours, decodeF32(s.sparse.last_logits_f32_b64));
    assert.ok(err <= 1e-2, `${s.name}: relative error ${err.toExponential(3)}`);
    assert.equal(argmax(ours), s.sparse.last_argmax, s.name);
  }
});

test('glance-tiny: completes a TypeScript prompt (FP8 indexer cache, streamed generation)', async () => {
  const model = await loadModel(modelDir, { attention: 'sparse' });
  const tokenizer = loadTokenizer(modelDir);
  assert.ok(tokenizer, 'the shipped model has a tokenizer');
  // framed as `glance generate --prompt` and the sidecar frame text: the start of a file in a repository
  const frame = repositoryFrame(tokenizer, 'src/isPalindrome.ts');
  assert.ok(frame, 'the shipped model has the repository tokens');
  const prompt = [...frame, ...tokenizer.encode('export function isPalindrome(s: string): boolean {')];
  let text = '';
  let n = 0;
  for await (const step of generate(model, tokenizer, prompt, { maxTokens: 24, temperature: 0 })) {
    text += step.text;
    n++;
  }
  assert.ok(n > 0 && n <= 24, `generated ${n} tokens`);
  assert.ok(/\S/.test(text), `completion is blank: ${JSON.stringify(text)}`);
  // plausible TypeScript for a function body: a statement keyword on an indented line
  assert.match(text, /\n[ \t]+(return|const|let|if|for|while)\b/, `not a function body: ${JSON.stringify(text)}`);
});

test('glance-tiny: the shipped directory stays within the 64 MiB the extension embeds', () => {
  const files = fs.readdirSync(modelDir).filter((f) => fs.statSync(path.join(modelDir, f)).isFile());
  const total = files.reduce((sum, f) => sum + fs.statSync(path.join(modelDir, f)).size, 0);
  assert.ok(total <= 64 * 2 ** 20, `models/glance-tiny is ${(total / 2 ** 20).toFixed(2)} MiB (${files.length} files)`);
  for (const f of files.filter((name) => name.endsWith('.safetensors'))) {
    const size = fs.statSync(path.join(modelDir, f)).size;
    assert.ok(size <= 16 * 2 ** 20, `${f} is ${(size / 2 ** 20).toFixed(2)} MiB: shards are at most 16 MiB`);
  }
});
