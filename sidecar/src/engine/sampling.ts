// Token sampling with HF transformers' semantics and order: repetition penalty → temperature → top-k → top-p →
// draw. Greedy (temperature 0) is argmax with the lowest index winning ties. A seeded xoshiro128** generator makes
// runs reproducible. Pure TypeScript; one pass over the vocabulary plus work proportional to the candidates.

import { GlanceError } from './errors';

export interface SamplerOptions {
  /** 0 = greedy. Default 1. */
  temperature?: number;
  /** nucleus mass in (0, 1]; 1 = off. Default 1. */
  topP?: number;
  /** keep the k highest logits (ties at the k-th value kept, as HF does); 0 = off. Default 0. */
  topK?: number;
  /** HF repetition penalty (> 0; 1 = off): positive logits of seen tokens are divided by it, negative multiplied. */
  repetitionPenalty?: number;
  /** PRNG seed (a non-negative safe integer). Default: random. */
  seed?: number;
}

/** xoshiro128** seeded through splitmix32; `next()` is a double in [0, 1) with 53 random bits. */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    let x = (seed >>> 0) ^ Math.imul(Math.floor(seed / 4294967296) >>> 0, 0x9e3779b9);
    const splitmix = (): number => {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = splitmix();
    this.s1 = splitmix();
    this.s2 = splitmix();
    this.s3 = splitmix();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  next(): number {
    const a = this.nextUint32() >>> 5; // 27 bits
    const b = this.nextUint32() >>> 6; // 26 bits
    return (a * 67108864 + b) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

function badOption(name: string, expected: string, found: unknown): GlanceError {
  return new GlanceError('bad_input', `sampling option ${name} must be ${expected}; found ${String(found)}`, { option: name, found });
}

/** Index of the largest value; lowest index on ties; NaN never wins; -1 if all are NaN / -Infinity. */
export function argmax(x: ArrayLike<number>): number {
  let best = -1;
  let bv = -Infinity;
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (v > bv) {
      bv = v;
      best = i;
    }
  }
  return best;
}

export class Sampler {
  readonly temperature: number;
  readonly topP: number;
  readonly topK: number;
  readonly repetitionPenalty: number;
  readonly seed: number;
  private readonly rng: Rng;
  private work = new Float32Array(0);
  private seen = new Uint8Array(0);
  private cand = new Int32Array(0);
  private weight = new Float64Array(0);
  /** max scaled logit − scaled logit of each candidate (≥ 0) */
  private delta = new Float64Array(0);
  private readonly bucketMass = new Float64Array(NUCLEUS_BUCKETS);

  constructor(opts: SamplerOptions = {}) {
    const t = opts.temperature ?? 1;
    if (typeof t !== 'number' || !Number.isFinite(t) || t < 0) throw badOption('temperature', 'a finite number ≥ 0', t);
    const p = opts.topP ?? 1;
    if (typeof p !== 'number' || !(p > 0 && p <= 1)) throw badOption('topP', 'a number in (0, 1]', p);
    const k = opts.topK ?? 0;
    if (!Number.isSafeInteger(k) || k < 0) throw badOption('topK', 'an integer ≥ 0', k);
    const r = opts.repetitionPenalty ?? 1;
    if (typeof r !== 'number' || !Number.isFinite(r) || r <= 0) throw badOption('repetitionPenalty', 'a finite number > 0', r);
    const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 32);
    if (!Number.isSafeInteger(seed) || seed < 0) throw badOption('seed', 'a non-negative integer', seed);
    this.temperature = t;
    this.topP = p;
    this.topK = k;
    this.repetitionPenalty = r;
    this.seed = seed;
    this.rng = new Rng(seed);
  }

  get greedy(): boolean {
    return this.temperature === 0;
  }

  /**
   * Picks the next token from `logits` (one row, [vocab]); `context` are the ids so far (prompt + generated),
   * used only by the repetition penalty. `logits` is not modified.
   */
  sample(logits: Float32Array, context?: ArrayLike<number>): number {
    const n = logits.length;
    if (n === 0) throw new GlanceError('bad_input', 'cannot sample from an empty logits row');
    let x: Float32Array = logits;
    if (this.repetitionPenalty !== 1 && context && context.length > 0) {
      if (this.work.length !== n) this.work = new Float32Array(n);
      if (this.seen.length !== n) this.seen = new Uint8Array(n);
      this.work.set(logits);
      x = this.work;
      const pen = this.repetitionPenalty;
      const seen = this.seen;
      for (let i = 0; i < context.length; i++) {
        const id = context[i]!;
        if (id < 0 || id >= n || seen[id]) continue;
        seen[id] = 1;
        const v = x[id]!;
        x[id] = v < 0 ? v * pen : v / pen;
      }
      for (let i = 0; i < context.length; i++) {
        const id = context[i]!;
        if (id >= 0 && id < n) seen[id] = 0;
      }
    }
    if (this.temperature === 0) {
      const best = argmax(x);
      if (best < 0) throw new GlanceError('bad_input', 'every logit is NaN or -Infinity; nothing to pick');
      return best;
    }
    return this.draw(x);
  }

  private draw(x: Float32Array): number {
    const n = x.length;
    if (this.cand.length !== n) {
      this.cand = new Int32Array(n);
      this.weight = new Float64Array(n);
      this.delta = new Float64Array(n);
    }
    const cand = this.cand;
    const w = this.weight;
    const dl = this.delta;

    // scaled logits in fp32 as HF computes them (scores / temperature), then top-k threshold
    let max = -Infinity;
    for (let i = 0; i < n; i++) {
      const v = x[i]!;
      if (v > max) max = v;
    }
    if (max === -Infinity || Number.isNaN(max)) throw new GlanceError('bad_input', 'every logit is NaN or -Infinity; nothing to sample');
    let threshold = -Infinity;
    if (this.topK > 0 && this.topK < n) threshold = kthLargest(x, this.topK);
    let m = 0;
    for (let i = 0; i < n; i++) {
      const v = x[i]!;
      if (v >= threshold && v > -Infinity) cand[m++] = i;
    }
    // softmax weights over the candidates (double precision), relative to the max
    const maxScaled = Math.fround(max / this.temperature);
    let sum = 0;
    for (let j = 0; j < m; j++) {
      const i = cand[j]!;
      const delta = maxScaled - Math.fround(x[i]! / this.temperature);
      const e = Math.exp(-delta);
      dl[j] = delta;
      w[j] = e;
      sum += e;
    }
    let count = m;
    if (this.topP < 1) {
      count = this.nucleus(m, sum);
      sum = 0;
      for (let j = 0; j < count; j++) sum += w[j]!;
    }
    const u = this.rng.next() * sum;
    let acc = 0;
    for (let j = 0; j < count; j++) {
      acc += w[j]!;
      if (u < acc) return cand[j]!;
    }
    return cand[count - 1]!;
  }

  /**
   * Moves the nucleus to the front of the first m candidates and returns its size. A token is kept while the mass
   * of the tokens ranked above it (by weight; ties: lower id first) is < topP·sum, so at least one is kept.
   * Candidates are bucketed by log-weight (1/64 nat wide); only the bucket the boundary falls in is sorted.
   */
  private nucleus(m: number, sum: number): number {
    const cand = this.cand;
    const w = this.weight;
    const d = this.delta;
    const target = this.topP * sum;
    const B = NUCLEUS_BUCKETS;
    const mass = this.bucketMass;
    mass.fill(0);
    for (let j = 0; j < m; j++) mass[bucketOf(d[j]!)] += w[j]!;
    let before = 0;
    let b = 0;
    for (; b < B - 1; b++) {
      if (before + mass[b]! >= target) break;
      before += mass[b]!;
    }
    // buckets above b are kept whole (in id order); bucket b is sorted and cut
    let k = 0;
    const bc: number[] = [];
    const bw: number[] = [];
    for (let j = 0; j < m; j++) {
      const bj = bucketOf(d[j]!);
      if (bj < b) {
        cand[k] = cand[j]!;
        w[k] = w[j]!;
        d[k] = d[j]!;
        k++;
      } else if (bj === b) {
        bc.push(cand[j]!); // read before the compaction above can overwrite position j
        bw.push(w[j]!);
      }
    }
    const order = bc.map((_, i) => i).sort((x, y) => bw[y]! - bw[x]! || bc[x]! - bc[y]!);
    for (const i of order) {
      if (k > 0 && before >= target) break;
      cand[k] = bc[i]!;
      w[k] = bw[i]!;
      before += bw[i]!;
      k++;
    }
    return k;
  }
}

const NUCLEUS_BUCKETS = 4096;
const NUCLEUS_BUCKETS_PER_NAT = 64;

function bucketOf(delta: number): number {
  const b = Math.floor(delta * NUCLEUS_BUCKETS_PER_NAT);
  return b < NUCLEUS_BUCKETS - 1 ? b : NUCLEUS_BUCKETS - 1;
}

/** The k-th largest finite-or-infinite value of x (NaN ignored), 1 ≤ k ≤ x.length, via a size-k min-heap. */
export function kthLargest(x: ArrayLike<number>, k: number): number {
  const heap = new Float64Array(k);
  let size = 0;
  const siftDown = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let s = i;
      if (l < size && heap[l]! < heap[s]!) s = l;
      if (r < size && heap[r]! < heap[s]!) s = r;
      if (s === i) return;
      const t = heap[i]!;
      heap[i] = heap[s]!;
      heap[s] = t;
      i = s;
    }
  };
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (Number.isNaN(v)) continue;
    if (size < k) {
      let j = size++;
      heap[j] = v;
      while (j > 0) {
        const p = (j - 1) >> 1;
        if (heap[p]! <= heap[j]!) break;
        const t = heap[p]!;
        heap[p] = heap[j]!;
        heap[j] = t;
        j = p;
      }
    } else if (v > heap[0]!) {
      heap[0] = v;
      siftDown(0);
    }
  }
  return size < k ? -Infinity : heap[0]!;
}
