// Decode batching and prefix copies (what the sidecar's slots rely on) must compute exactly what one sequence at
// a time computes: same logits, in sparse mode past index_topk (the indexer really selects) and in dense mode.

import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';

import { loadModel, type AttentionMode } from '../../sidecar/src/engine/model';

const FIXTURE = path.join(__dirname, '..', '..', '..', 'test', 'fixtures', 'golden', 'v32_fp32');

function randomIds(n: number, vocab: number, seed: number): Int32Array {
  let s = seed >>> 0;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s % vocab;
  }
  return out;
}

function maxRelErr(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

for (const attention of ['sparse', 'dense'] as AttentionMode[]) {
  test(`decodeBatch equals one-at-a-time decode (${attention}, contexts past index_topk)`, async () => {
    const model = await loadModel(FIXTURE, { attention, indexerPrecision: 'fp8' });
    const V = model.config.vocabSize;
    // Three sequences of different lengths: 5 (dense region), 40 and 90 (past index_topk = 16).
    const prompts = [5, 40, 90].map((n, i) => randomIds(n, V, 11 + i));
    const next = [3, 7, 11];
    const batched = prompts.map((p) => {
      const s = model.createSequence();
      s.forward(p, false);
      return s;
    });
    const single = prompts.map((p) => {
      const s = model.createSequence();
      s.forward(p, false);
      return s;
    });
    for (let step = 0; step < 3; step++) {
      const ids = next.map((n) => (n + step * 5) % V);
      const got = model.decodeBatch(batched.map((sequence, i) => ({ sequence, id: ids[i] })));
      assert.equal(got.length, 3);
      for (let i = 0; i < 3; i++) {
        const want = single[i].forward(Int32Array.of(ids[i]), false);
        assert.equal(got[i].length, V);
        assert.ok(maxRelErr(got[i], want) < 1e-5, `sequence ${i} step ${step}: rel err ${maxRelErr(got[i], want)}`);
        assert.equal(batched[i].length, single[i].length);
      }
    }
  });
}

test('copyPrefixFrom gives the same continuation as computing the prefix again', async () => {
  const model = await loadModel(FIXTURE, { attention: 'sparse', indexerPrecision: 'fp8' });
  const V = model.config.vocabSize;
  const ids = randomIds(120, V, 5);
  const source = model.createSequence();
  source.forward(ids, false);
  const copy = model.createSequence();
  copy.forward(randomIds(7, V, 9), false); // junk that the copy must replace
  copy.copyPrefixFrom(source, 100);
  assert.equal(copy.length, 100);
  const fresh = model.createSequence();
  fresh.forward(ids.subarray(0, 100), false);
  const tail = ids.subarray(100, 120);
  const a = copy.forward(tail, true);
  const b = fresh.forward(tail, true);
  assert.ok(maxRelErr(a, b) < 1e-6);
  assert.ok(copy.cacheBytes > 0);
  assert.throws(() => copy.copyPrefixFrom(source, 121), /cannot copy 121 tokens/);
  assert.throws(() => model.decodeBatch([{ sequence: copy, id: 1 }, { sequence: copy, id: 2 }]), /appears twice/);
});
