import assert from 'node:assert/strict';
import test from 'node:test';

import { GlanceError } from '../../sidecar/src/engine/errors';
import { argmax, kthLargest, Rng, Sampler } from '../../sidecar/src/engine/sampling';

const logitsOf = (probs: number[]): Float32Array => Float32Array.from(probs, (p) => Math.log(p));

function histogram(s: Sampler, logits: Float32Array, n: number, context?: number[]): number[] {
  const h = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < n; i++) h[s.sample(logits, context)]!++;
  return h;
}

test('greedy: argmax, lowest index on ties, NaN never wins, input untouched', () => {
  const s = new Sampler({ temperature: 0 });
  assert.equal(s.greedy, true);
  assert.equal(s.sample(Float32Array.from([1, 3, 2])), 1);
  assert.equal(s.sample(Float32Array.from([3, 1, 3])), 0);
  assert.equal(s.sample(Float32Array.from([NaN, -1, NaN])), 1);
  assert.equal(s.sample(Float32Array.from([-Infinity, -Infinity, -5])), 2);
  assert.equal(argmax([NaN, NaN]), -1);
  assert.throws(() => s.sample(Float32Array.from([NaN, -Infinity])), (e: unknown) => e instanceof GlanceError && e.code === 'bad_input');
  const x = Float32Array.from([2, -2, 1.5]);
  new Sampler({ temperature: 0, repetitionPenalty: 3 }).sample(x, [0, 1]);
  assert.deepEqual(Array.from(x), [2, -2, 1.5], 'logits are not modified');
});

test('repetition penalty as HF: divide positive, multiply negative, once per distinct token', () => {
  // [2, -2, 1.5] with penalty 2 on {0, 1} → [1, -4, 1.5]
  const s = new Sampler({ temperature: 0, repetitionPenalty: 2 });
  assert.equal(s.sample(Float32Array.from([2, -2, 1.5]), [0, 1]), 2);
  // token 0 repeated in the context is still penalised once: 2 / 2 = 1.2 / 1 … 1 < 1.2
  assert.equal(s.sample(Float32Array.from([2, -2, 1.2]), [0, 0, 0]), 2);
  assert.equal(s.sample(Float32Array.from([2, -2, 0.9]), [0, 0, 0]), 0);
  // negative logits get more negative: [-1, -1.5] with penalty 2 on 0 → [-2, -1.5]
  assert.equal(s.sample(Float32Array.from([-1, -1.5]), [0]), 1);
  // penalty < 1 favours repeats; out-of-range context ids are ignored
  assert.equal(new Sampler({ temperature: 0, repetitionPenalty: 0.5 }).sample(Float32Array.from([1, 1.5]), [0, 7, -1]), 0);
});

test('seeded sampling is reproducible; different seeds differ', () => {
  const logits = logitsOf([0.1, 0.2, 0.3, 0.4]);
  const run = (seed: number): number[] => {
    const s = new Sampler({ temperature: 1, seed });
    return Array.from({ length: 64 }, () => s.sample(logits));
  };
  assert.deepEqual(run(42), run(42));
  assert.notDeepEqual(run(42), run(43));
  assert.equal(new Sampler({ seed: 7 }).seed, 7);
  const r1 = new Rng(2 ** 40 + 5);
  const r2 = new Rng(5);
  assert.notEqual(r1.next(), r2.next(), 'high seed bits matter');
  for (let i = 0; i < 1000; i++) {
    const v = r1.next();
    assert.ok(v >= 0 && v < 1);
  }
});

test('temperature 1 samples the softmax distribution; lower temperature sharpens it', () => {
  const p = [0.1, 0.2, 0.3, 0.4];
  const n = 40000;
  const h = histogram(new Sampler({ temperature: 1, seed: 1 }), logitsOf(p), n);
  h.forEach((c, i) => assert.ok(Math.abs(c / n - p[i]!) < 0.012, `token ${i}: ${c / n} vs ${p[i]}`));
  const sq = p.map((x) => x * x);
  const z = sq.reduce((a, b) => a + b, 0);
  const h2 = histogram(new Sampler({ temperature: 0.5, seed: 2 }), logitsOf(p), n);
  h2.forEach((c, i) => assert.ok(Math.abs(c / n - sq[i]! / z) < 0.012, `T=0.5 token ${i}: ${c / n} vs ${sq[i]! / z}`));
});

test('top-k keeps the k highest (ties at the threshold kept, as HF does)', () => {
  const h = histogram(new Sampler({ temperature: 1, topK: 2, seed: 3 }), logitsOf([0.1, 0.2, 0.3, 0.4]), 20000);
  assert.equal(h[0], 0);
  assert.equal(h[1], 0);
  assert.ok(Math.abs(h[3]! / 20000 - 0.4 / 0.7) < 0.015);
  assert.equal(new Sampler({ topK: 1, temperature: 5, seed: 4 }).sample(Float32Array.from([0, 9, 3])), 1);
  const ties = histogram(new Sampler({ temperature: 1, topK: 1, seed: 5 }), Float32Array.from([5, 5, 1]), 2000);
  assert.ok(ties[0]! > 800 && ties[1]! > 800 && ties[2] === 0, String(ties));
});

test('top-p keeps the smallest prefix of mass ≥ p (at least one token)', () => {
  // sorted probabilities 0.5, 0.3, 0.15, 0.05: p = 0.75 keeps {0.5, 0.3}
  const probs = [0.15, 0.5, 0.05, 0.3];
  const n = 20000;
  const h = histogram(new Sampler({ temperature: 1, topP: 0.75, seed: 6 }), logitsOf(probs), n);
  assert.equal(h[0], 0);
  assert.equal(h[2], 0);
  assert.ok(Math.abs(h[1]! / n - 0.625) < 0.015, String(h));
  // p = 0.9 keeps three
  const h9 = histogram(new Sampler({ temperature: 1, topP: 0.9, seed: 7 }), logitsOf(probs), n);
  assert.equal(h9[2], 0);
  assert.ok(h9[0]! > 0);
  // a tiny p keeps only the most likely
  assert.deepEqual(histogram(new Sampler({ temperature: 1, topP: 1e-9, seed: 8 }), logitsOf(probs), 200), [0, 200, 0, 0]);
  // combined with top-k: top-k first
  const hk = histogram(new Sampler({ temperature: 1, topK: 3, topP: 0.99, seed: 9 }), logitsOf(probs), n);
  assert.equal(hk[2], 0);
});

test('options are validated', () => {
  const bad: [Record<string, number>, RegExp][] = [
    [{ temperature: -1 }, /temperature must be a finite number ≥ 0/],
    [{ temperature: Infinity }, /temperature/],
    [{ topP: 0 }, /topP must be a number in \(0, 1\]/],
    [{ topP: 1.5 }, /topP/],
    [{ topK: 1.5 }, /topK must be an integer ≥ 0/],
    [{ repetitionPenalty: 0 }, /repetitionPenalty must be a finite number > 0/],
    [{ seed: -1 }, /seed must be a non-negative integer/],
  ];
  for (const [opts, re] of bad) {
    assert.throws(() => new Sampler(opts), (e: unknown) => e instanceof GlanceError && e.code === 'bad_input' && re.test(e.message), JSON.stringify(opts));
  }
});

test('kthLargest matches sorting', () => {
  const r = new Rng(11);
  const x = Float32Array.from({ length: 1000 }, () => Math.floor(r.next() * 50));
  const sorted = Array.from(x).sort((a, b) => b - a);
  for (const k of [1, 2, 10, 500, 1000]) assert.equal(kthLargest(x, k), sorted[k - 1]);
});

test('fast enough for a 130K vocabulary', () => {
  const V = 129280;
  const r = new Rng(12);
  const logits = Float32Array.from({ length: V }, () => (r.next() - 0.5) * 20);
  const context = Array.from({ length: 4096 }, (_, i) => (i * 31) % V);
  for (const opts of [{ temperature: 0 }, { temperature: 0.7, topP: 0.95 }, { temperature: 1, topK: 50, topP: 0.9, repetitionPenalty: 1.1 }, { temperature: 1 }]) {
    const s = new Sampler({ ...opts, seed: 1 });
    s.sample(logits, context);
    const t0 = process.hrtime.bigint();
    const N = 20;
    for (let i = 0; i < N; i++) s.sample(logits, context);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6 / N;
    assert.ok(ms < 25, `${JSON.stringify(opts)}: ${ms.toFixed(2)} ms per sample`);
  }
});
