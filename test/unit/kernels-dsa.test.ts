// The DSA decode ops added for long contexts, each against what it must equal exactly:
//   - topk of one long row (split over the threads) against a sort-based reference: ties, narrow values, masked rows,
//     non-finite values, signed zeros; the same with one thread;
//   - indexerTopk against indexerScoresFp8 followed by topk (element for element), decode and prefill shapes, both
//     AVX2 layouts of the indexer (heads ≤ 8 and > 8), positions before the end of the cache, negative positions,
//     fewer keys than k, tied scores;
//   - mlaAttention over a bf16 (Uint16Array) cache against the fp32 op on the widened values, dense and sparse,
//     split-KV decode and prefill: exactly equal on the AVX2 and scalar paths; with AVX-512-BF16 dot products or AMX
//     tiles (q and the probabilities rounded to bf16, as the CUDA kernel does) within a bf16 bound; argument errors.
// Inputs are seeded (GLANCE_TEST_SEED replays a failure). The whole file runs again with GLANCE_SIMD=scalar in a child
// process (the last tests), which checks the portable bodies against the same references, with GLANCE_SIMD=avx2
// where the CPU has AVX-512-BF16 and with GLANCE_SIMD=avx512 where it has AMX, so that every body the CPU can run
// stays tested on it.

import test from 'node:test';
import assert from 'node:assert/strict';

import { loadNative } from '../../sidecar/src/native/index';
import { assertExact, runTestFileWithSimd, withThreads } from '../helpers/kernel-checks';
import { rand, randInt, seedNote } from '../helpers/seeded-random';

const native = loadNative();
/** The addon attends over bf16 caches with AVX-512-BF16 dot products (bf16-rounded operands, not exact). */
const BF16_DOT = native.backends().cpu.bf16Dot;
const IS_CHILD = process.env.GLANCE_TEST_CHILD === '1';

/** The k largest finite scores of each row, ties to the lower index, as a set in position order, −1 padded. */
function refTopk(scores: Float32Array, T: number, S: number, k: number): Int32Array {
  const idx = new Int32Array(T * k).fill(-1);
  for (let t = 0; t < T; t++) {
    const cand: number[] = [];
    for (let s = 0; s < S; s++) if (Number.isFinite(scores[t * S + s])) cand.push(s);
    cand.sort((a, b) => {
      const va = scores[t * S + a];
      const vb = scores[t * S + b];
      return va > vb ? -1 : va < vb ? 1 : a - b;
    });
    const chosen = cand.slice(0, Math.min(k, cand.length)).sort((a, b) => a - b);
    for (let j = 0; j < chosen.length; j++) idx[t * k + j] = chosen[j];
  }
  return idx;
}

// ---- topk, one long row -----------------------------------------------------------------------------------

test('topk: one long row split over the threads equals the reference (ties, narrow, masked, special values)', () => {
  const kinds = ['random', 'ties', 'narrow', 'masked', 'few-finite', 'special', 'signed-zero', 'all-equal'] as const;
  for (const kind of kinds) {
    for (const S of [8192, 40_000]) {
      const k = 2048;
      const scores = new Float32Array(S);
      for (let s = 0; s < S; s++) {
        let v: number;
        switch (kind) {
          case 'ties': v = randInt(40) - 10; break;
          case 'narrow': v = 1 + rand() * 1e-3; break; // one level-1 bucket holds every score
          case 'masked': v = s > S / 2 ? -Infinity : rand() * 10 - 5; break;
          case 'few-finite': v = randInt(S) < 1000 ? rand() : -Infinity; break; // fewer than k finite
          case 'special': v = [NaN, Infinity, -Infinity, 3.5, -3.5, 1e-40, -1e-40, 3.4e38, -3.4e38, rand()][s % 10]; break;
          case 'signed-zero': v = [0, -0, 1e-3, -1e-3][randInt(4)]; break;
          case 'all-equal': v = 0.25; break;
          default: v = rand() * 200 - 100;
        }
        scores[s] = v;
      }
      const ref = refTopk(scores, 1, S, k);
      for (const threads of [0, 1]) {
        const idx = new Int32Array(k).fill(-2);
        const run = () => native.topk(idx, scores, 1, S, k);
        if (threads === 0) run();
        else withThreads(native, threads, run);
        assertExact(idx, ref, `topk ${kind} S=${S} threads=${threads || 'all'}`);
      }
    }
  }
});

// ---- indexerTopk -------------------------------------------------------------------------------------------

/** A random e4m3 byte that is not a NaN code (0x7F / 0xFF), with exponents in a moderate range. */
function e4m3Byte(): number {
  for (;;) {
    const b = randInt(256);
    const e = (b >> 3) & 15;
    if ((b & 0x7f) !== 0x7f && e >= 3 && e <= 12) return b;
  }
}

interface IndexerCase {
  T: number;
  S: number;
  Hi: number;
  D: number;
  k: number;
  positions: number[];
  /** copies of a few key rows repeated everywhere, so that many scores tie */
  tiedKeys?: boolean;
}

function runIndexerCase(c: IndexerCase, label: string): void {
  const { T, S, Hi, D, k } = c;
  const q = Uint8Array.from({ length: T * Hi * D }, e4m3Byte);
  const weights = Float32Array.from({ length: T * Hi }, () => rand() * 0.5 + 0.05);
  const capacity = S + 7; // the cache may be longer than S: only S rows are read
  const keys = new Uint8Array(capacity * D);
  const distinct = Array.from({ length: 5 }, () => Uint8Array.from({ length: D }, e4m3Byte));
  for (let s = 0; s < capacity; s++) {
    if (c.tiedKeys) keys.set(distinct[s % distinct.length], s * D);
    else for (let d = 0; d < D; d++) keys[s * D + d] = e4m3Byte();
  }
  const keyScales = Float32Array.from({ length: capacity }, () => (c.tiedKeys ? 1 / 64 : 2 ** (randInt(5) - 8)));
  const positions = Int32Array.from(c.positions);
  const scores = new Float32Array(T * S);
  native.indexerScoresFp8(scores, q, weights, keys, keyScales, T, S, Hi, D, positions);
  const ref = new Int32Array(T * k);
  native.topk(ref, scores, T, S, k);
  for (const threads of [0, 1]) {
    const idx = new Int32Array(T * k).fill(-2);
    const run = () => native.indexerTopk(idx, q, weights, keys, keyScales, T, S, Hi, D, positions, k);
    if (threads === 0) run();
    else withThreads(native, threads, run);
    assertExact(idx, ref, `${label} threads=${threads || 'all'}`);
  }
  // and the selection itself is right (the two ops above are checked against references in kernels.test.ts)
  assertExact(ref, refTopk(scores, T, S, k), `${label}: topk of the scores`);
}

test('indexerTopk equals indexerScoresFp8 then topk: decode shapes, both indexer layouts, ties, short positions', () => {
  const cases: (IndexerCase & { name: string })[] = [
    { name: 'decode 4x64', T: 1, S: 20_000, Hi: 4, D: 64, k: 2048, positions: [19_999] },
    { name: 'decode position past S', T: 1, S: 9000, Hi: 4, D: 64, k: 2048, positions: [50_000] },
    { name: 'decode mid-cache position', T: 1, S: 12_000, Hi: 4, D: 64, k: 2048, positions: [7000] },
    { name: 'decode fewer keys than k', T: 1, S: 3000, Hi: 4, D: 64, k: 2048, positions: [1500] },
    { name: 'decode negative position', T: 1, S: 3000, Hi: 4, D: 64, k: 16, positions: [-1] },
    { name: 'decode 16x128 (heads in lanes)', T: 1, S: 6000, Hi: 16, D: 128, k: 512, positions: [5999] },
    { name: 'decode 3x40 (odd sizes)', T: 1, S: 5001, Hi: 3, D: 40, k: 300, positions: [5000] },
    { name: 'decode tied scores', T: 1, S: 10_000, Hi: 4, D: 64, k: 2048, positions: [9999], tiedKeys: true },
    // the AMX one-pass body for every head padding and both widths, ranges that end inside a 48-key chunk
    { name: 'decode 1x64', T: 1, S: 7001, Hi: 1, D: 64, k: 700, positions: [7000] },
    { name: 'decode 2x128', T: 1, S: 2000, Hi: 2, D: 128, k: 100, positions: [1998] },
    { name: 'decode 5x128 (heads padded to 8)', T: 1, S: 4099, Hi: 5, D: 128, k: 1000, positions: [4098] },
    { name: 'decode 8x64, fewer keys than a chunk', T: 1, S: 61, Hi: 8, D: 64, k: 16, positions: [40] },
  ];
  for (const c of cases) runIndexerCase(c, `indexerTopk ${c.name}`);
});

test('indexerTopk equals indexerScoresFp8 then topk: prefill (causal rows over several blocks), batch of two', () => {
  const S = 3000;
  const T = 150; // three blocks of queries
  const positions = Array.from({ length: T }, (_, t) => S - T + t);
  runIndexerCase({ T, S, Hi: 4, D: 64, k: 256, positions }, 'indexerTopk prefill');
  runIndexerCase({ T: 2, S: 9000, Hi: 4, D: 64, k: 2048, positions: [8999, 4000] }, 'indexerTopk two queries');
  runIndexerCase({ T: 3, S: 100, Hi: 4, D: 64, k: 16, positions: [-1, 0, 99] }, 'indexerTopk short rows');
});

test('indexerTopk: argument checks name the argument', () => {
  const ok = {
    idx: new Int32Array(8), q: new Uint8Array(4 * 64), w: new Float32Array(4), keys: new Uint8Array(100 * 64),
    ks: new Float32Array(100), pos: Int32Array.of(99),
  };
  assert.throws(() => native.indexerTopk(new Int32Array(7), ok.q, ok.w, ok.keys, ok.ks, 1, 100, 4, 64, ok.pos, 8), {
    name: 'RangeError',
    message: /indexerTopk: idx has length 7, expected 8/,
  });
  assert.throws(() => native.indexerTopk(ok.idx, ok.q, ok.w, ok.keys.subarray(0, 64 * 99), ok.ks, 1, 100, 4, 64, ok.pos, 8), {
    name: 'RangeError',
    message: /indexerTopk: keys has length 6336, expected at least 6400/,
  });
  assert.throws(
    () => native.indexerTopk(ok.idx, new Float32Array(256) as unknown as Uint8Array, ok.w, ok.keys, ok.ks, 1, 100, 4, 64, ok.pos, 8),
    { name: 'TypeError', message: /indexerTopk: q must be a Uint8Array/ },
  );
});

// ---- mlaAttention over a bf16 cache ------------------------------------------------------------------------

/** A random fp32 cache and the same values as bf16 bit patterns (the fp32 copy holds the widened bf16 values). */
function bf16Cache(n: number): { f32: Float32Array; bf16: Uint16Array } {
  const f32 = new Float32Array(n);
  const bits = new Uint32Array(f32.buffer);
  const bf16 = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    f32[i] = (rand() * 2 - 1) * 2;
    bf16[i] = bits[i] >>> 16;
    bits[i] = bf16[i] << 16;
  }
  return { f32, bf16 };
}

interface AttentionCase { T: number; S: number; H: number; L: number; R: number; k: number; sparse: boolean }

/** Random q, positions and selection (some -1) for case c over a bf16 cache (longer than S: only S rows are read);
 *  ref = the fp32 op on the widened rows; runBf16(out) runs the op on the bf16 cache. */
function bf16AttentionCase(c: AttentionCase): { ref: Float32Array; runBf16: (out: Float32Array) => void } {
  const D = c.L + c.R;
  const { f32, bf16 } = bf16Cache((c.S + 3) * D);
  const q = Float32Array.from({ length: c.T * c.H * D }, () => (rand() * 2 - 1) * 0.3);
  const positions = Int32Array.from({ length: c.T }, (_, t) => c.S - c.T + t);
  let indices: Int32Array | null = null;
  if (c.sparse) {
    indices = new Int32Array(c.T * c.k);
    for (let i = 0; i < indices.length; i++) indices[i] = randInt(8) === 0 ? -1 : randInt(c.S);
  }
  const ref = new Float32Array(c.T * c.H * c.L).fill(NaN);
  native.mlaAttention(ref, q, f32, c.S, c.T, c.H, c.L, c.R, 0.125, indices, c.k, positions);
  return { ref, runBf16: (out) => native.mlaAttention(out, q, bf16, c.S, c.T, c.H, c.L, c.R, 0.125, indices, c.k, positions) };
}

test('mlaAttention with a bf16 cache equals the fp32 op on the widened rows (dense, sparse, split-KV, prefill)', { skip: BF16_DOT && 'AVX-512-BF16 path: see the next test' }, () => {
  const cases = [
    { T: 1, S: 3000, H: 8, L: 256, R: 32, k: 2048, sparse: true }, // decode: split-KV over the selected rows
    { T: 1, S: 700, H: 8, L: 256, R: 32, k: 0, sparse: false }, // decode, dense
    { T: 5, S: 300, H: 20, L: 64, R: 16, k: 40, sparse: true }, // more than 16 heads, several queries
    { T: 37, S: 37, H: 4, L: 40, R: 8, k: 0, sparse: false }, // prefill, causal, odd sizes
  ];
  for (const c of cases) {
    const { ref, runBf16 } = bf16AttentionCase(c);
    for (const threads of [0, 1]) {
      const out = new Float32Array(c.T * c.H * c.L).fill(NaN);
      const run = () => runBf16(out);
      if (threads === 0) run();
      else withThreads(native, threads, run);
      for (let i = 0; i < ref.length; i++) {
        if (!Object.is(out[i], ref[i])) assert.fail(`mlaAttention bf16 ${JSON.stringify(c)} threads=${threads}: element ${i} is ${out[i]}, fp32 op gives ${ref[i]} ${seedNote}`);
      }
    }
  }
});

// Bound for bf16-rounded q and probabilities: each rounding is a relative 2^-9; over a softmax-weighted mean of rows
// the errors partly cancel (measured ~2e-3 relative); a wrong row, column order or softmax gives O(1).
test('mlaAttention with a bf16 cache on AVX-512-BF16 / AMX is within bf16 rounding of the fp32 op (dense, sparse, split-KV, prefill)', { skip: !BF16_DOT && 'no AVX-512-BF16 path on this CPU / GLANCE_SIMD' }, () => {
  const cases = [
    { T: 1, S: 40000, H: 8, L: 512, R: 64, k: 2048, sparse: true }, // the bench decode shape
    { T: 1, S: 3000, H: 8, L: 256, R: 32, k: 2048, sparse: true }, // split-KV over the selected rows
    { T: 1, S: 700, H: 8, L: 256, R: 32, k: 0, sparse: false }, // decode, dense
    { T: 5, S: 300, H: 20, L: 64, R: 16, k: 40, sparse: true }, // more than 16 heads, several queries
    { T: 37, S: 37, H: 3, L: 40, R: 8, k: 0, sparse: false }, // prefill, causal, odd sizes (L, D not multiples of 32)
    { T: 2, S: 50, H: 1, L: 33, R: 3, k: 7, sparse: true }, // one head, fewer rows than a block
  ];
  for (const c of cases) {
    const { ref, runBf16 } = bf16AttentionCase(c);
    let first: Float32Array | null = null;
    for (const threads of [0, 1]) {
      const out = new Float32Array(c.T * c.H * c.L).fill(NaN);
      const run = () => runBf16(out);
      if (threads === 0) run();
      else withThreads(native, threads, run);
      for (let th = 0; th < c.T * c.H; th++) {
        let num = 0;
        let den = 0;
        for (let i = th * c.L; i < (th + 1) * c.L; i++) {
          if (!Number.isFinite(out[i])) assert.fail(`mlaAttention bf16-dot ${JSON.stringify(c)}: element ${i} is ${out[i]} ${seedNote}`);
          num += (out[i] - ref[i]) ** 2;
          den += ref[i] ** 2;
        }
        const rel = Math.sqrt(num / den);
        if (!(rel <= 1e-2)) assert.fail(`mlaAttention bf16-dot ${JSON.stringify(c)} threads=${threads}: (token, head) ${th} relative error ${rel} > 1e-2 ${seedNote}`);
      }
      // the split into work items depends on the shapes only: the same result on any thread count
      if (first === null) first = out;
      else for (let i = 0; i < out.length; i++) if (!Object.is(out[i], first[i])) assert.fail(`mlaAttention bf16-dot ${JSON.stringify(c)}: 1 thread differs at ${i} ${seedNote}`);
    }
  }
});

test('mlaAttention: a bf16 cache is length-checked like an fp32 one; other array types are refused', () => {
  const q = new Float32Array(8 * 24);
  const out = new Float32Array(8 * 16);
  assert.throws(() => native.mlaAttention(out, q, new Uint16Array(10 * 24 - 1), 10, 1, 8, 16, 8, 1, null, 0, Int32Array.of(9)), {
    name: 'RangeError',
    message: /mlaAttention: kv has length 239, expected at least 240/,
  });
  assert.throws(
    () => native.mlaAttention(out, q, new Int16Array(240) as unknown as Uint16Array, 10, 1, 8, 16, 8, 1, null, 0, Int32Array.of(9)),
    { name: 'TypeError', message: /mlaAttention: kv must be a Float32Array, a Uint16Array \(bf16\) or a Uint8Array/ },
  );
});

// ---- the scalar fallback ---------------------------------------------------------------------------------

test('the portable scalar kernels pass the same tests (child process, GLANCE_SIMD=scalar)', { skip: IS_CHILD }, () => {
  runTestFileWithSimd(__filename, 'scalar', 300_000);
});

// On a CPU with AMX the parent run checks the AMX attention body; the AVX-512-BF16 body it replaces gets this run.
test('the AVX-512-BF16 kernels pass the same tests on a CPU with AMX (child process, GLANCE_SIMD=avx512)', { skip: (IS_CHILD || !native.backends().cpu.amx) && 'child run, or no AMX path here' }, () => {
  const out = runTestFileWithSimd(__filename, 'avx512', 300_000);
  assert.match(out, /ok \d+ - mlaAttention with a bf16 cache on AVX-512-BF16 \/ AMX is within bf16 rounding/, 'the avx512 run must have checked the bf16 attention');
});

test('the AVX2 kernels pass the same tests on a CPU with AVX-512-BF16 (child process, GLANCE_SIMD=avx2)', { skip: (IS_CHILD || !BF16_DOT) && 'child run, or no AVX-512-BF16 path here' }, () => {
  const out = runTestFileWithSimd(__filename, 'avx2', 300_000);
  assert.match(out, /ok \d+ - mlaAttention with a bf16 cache equals the fp32 op/, 'the avx2 run must have checked the exact bf16 path');
});
