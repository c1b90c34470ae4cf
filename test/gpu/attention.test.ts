// The CUDA attention ops (kernels/cuda: indexer, top-k, sparse MLA, Hadamard, FP8 quantisation) against their CPU
// references (the CPU ops of the same addon, themselves tested against float64 references in test/unit), on fresh
// random inputs of several shapes including awkward ones (lengths that are not multiples of the tiles, k > length,
// ties, non-finite scores, invalid indices). Outputs are poisoned (NaN / -2) before each call so that an element the
// kernel forgets to write fails. Seeded (GLANCE_TEST_SEED replays a failure).
//
// Tolerances: Hadamard, quantisation and top-k are bit-identical to the CPU ops; indexer scores 1e-4 (exact FP8
// products, fp32 sums in another order); sparse MLA 1e-2 (bf16 probabilities in P.V). The fused indexer + top-k is
// compared tie-aware: any index that differs from the CPU selection must score within rounding of the threshold.
//
// Without a usable GPU (or in a build without CUDA) every test skips with the reason; `npm test` never runs this file.

import test from 'node:test';
import assert from 'node:assert/strict';

import { loadNative } from '../../sidecar/src/native/index';
import type { CudaOps } from '../../sidecar/src/native/index';
import { assertClose, assertExact, rand, randF32, randInt, seedNote } from './gpu-helpers';

const native = loadNative();
const info = native.cudaInfo();
const SKIP: string | false = info.available ? false : `no usable CUDA device: ${info.reason}`;
if (SKIP) console.log(`# test/gpu: skipping the CUDA op tests (${SKIP})`);
else console.log(`# test/gpu: ${info.name} (compute ${info.computeCapability}, ${info.multiprocessors} SMs)`);

function op<K extends keyof CudaOps>(name: K): NonNullable<CudaOps[K]> {
  const f = native.cuda[name];
  assert.ok(typeof f === 'function', `native.cuda.${String(name)} is missing from this build`);
  return (f as (...args: unknown[]) => unknown).bind(native.cuda) as NonNullable<CudaOps[K]>;
}

// ---- random numbers -----------------------------------------------------------------------------------------

/** e4m3 bytes without the NaN codes. */
function randE4m3(n: number): Uint8Array {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    let b = randInt(256);
    if ((b & 0x7f) === 0x7f) b ^= 1;
    a[i] = b;
  }
  return a;
}
function randPow2(n: number, emin: number, emax: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = 2 ** (emin + randInt(emax - emin + 1));
  return a;
}

// ---- bf16 -------------------------------------------------------------------------------------------------

/** bf16 bits of x (round to nearest even) and the value they hold. */
function toBf16(x: Float32Array): { bits: Uint16Array; values: Float32Array } {
  const u = new Uint32Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength));
  const bits = new Uint16Array(x.length);
  const back = new Uint32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = u[i];
    const r = ((v + 0x7fff + ((v >>> 16) & 1)) >>> 16) & 0xffff;
    bits[i] = r;
    back[i] = r << 16;
  }
  return { bits, values: new Float32Array(back.buffer) };
}

// ---- tests --------------------------------------------------------------------------------------------------

test('cudaInfo reports the device or why there is none', () => {
  const i = native.cudaInfo();
  assert.equal(typeof i.available, 'boolean');
  assert.equal(typeof i.built, 'boolean');
  if (i.available) {
    assert.ok(i.count >= 1 && i.name.length > 0 && i.multiprocessors > 0, JSON.stringify(i));
    assert.equal(native.backends().cuda.devices, i.count);
  } else {
    assert.ok(i.reason.length > 0, 'a missing device must come with a reason');
    assert.equal(native.backends().cuda.devices, 0);
  }
});

test('cuda.hadamardRows is bit-identical to the CPU op', { skip: SKIP }, () => {
  const hadamard = op('hadamardRows');
  for (const [N, D] of [[1, 1], [3, 2], [5, 128], [2, 256], [1, 8192], [33, 64]]) {
    const x = randF32(N * D, 3);
    const cpu = x.slice();
    native.hadamardRows(cpu, N, D);
    const gpu = x.slice();
    hadamard(gpu, N, D);
    assertExact(gpu, cpu, `hadamardRows N=${N} D=${D}`);
  }
  assert.throws(() => hadamard(new Float32Array(12), 1, 12), RangeError);
});

test('cuda.quantizeFp8Rows gives the CPU op\'s bytes and scales, non-finite rows included', { skip: SKIP }, () => {
  const quantize = op('quantizeFp8Rows');
  for (const [N, D] of [[1, 128], [7, 128], [4, 33], [3, 1000]]) {
    const x = randF32(N * D, 10 ** (randInt(7) - 3));
    if (N >= 4) {
      x[D] = Number.NaN; // row 1
      x[2 * D + 3] = Number.POSITIVE_INFINITY; // row 2
      for (let d = 0; d < D; d++) x[3 * D + d] = 0; // row 3: zeros (amax floor)
      x[3 * D] = 1e-7;
    }
    const outC = new Uint8Array(N * D).fill(0x55);
    const scC = new Float32Array(N).fill(-2);
    native.quantizeFp8Rows(outC, scC, x, N, D);
    const outG = new Uint8Array(N * D).fill(0x55);
    const scG = new Float32Array(N).fill(-2);
    quantize(outG, scG, x, N, D);
    assertExact(outG, outC, `quantizeFp8Rows bytes N=${N} D=${D}`);
    assertExact(scG, scC, `quantizeFp8Rows scales N=${N} D=${D}`);
  }
});

interface IndexerCase { T: number; S: number; Hi: number; D: number; positions?: number[] }

function indexerInputs(c: IndexerCase) {
  const q = randE4m3(c.T * c.Hi * c.D);
  const keys = randE4m3(c.S * c.D);
  const keyScales = randPow2(c.S, -10, -4);
  const weights = randF32(c.T * c.Hi, 0.05);
  const positions = Int32Array.from(c.positions ?? Array.from({ length: c.T }, (_, t) => c.S - c.T + t));
  return { q, keys, keyScales, weights, positions };
}

test('cuda.indexerScoresFp8 matches the CPU op (tensor-core and generic paths, causal windows)', { skip: SKIP }, () => {
  const scores = op('indexerScoresFp8');
  const cases: IndexerCase[] = [
    { T: 1, S: 1000, Hi: 64, D: 128 },
    { T: 2, S: 4097, Hi: 64, D: 128 },
    { T: 4, S: 257, Hi: 64, D: 128 },
    { T: 5, S: 300, Hi: 16, D: 64 },
    { T: 3, S: 2000, Hi: 64, D: 128, positions: [-1, 0, 5000] },
    { T: 17, S: 700, Hi: 8, D: 128, positions: Array.from({ length: 17 }, (_, t) => t * 41) },
    { T: 7, S: 513, Hi: 4, D: 32 },
    { T: 2, S: 129, Hi: 12, D: 128 },
  ];
  for (const c of cases) {
    const x = indexerInputs(c);
    const ref = new Float32Array(c.T * c.S).fill(Number.NaN);
    native.indexerScoresFp8(ref, x.q, x.weights, x.keys, x.keyScales, c.T, c.S, c.Hi, c.D, x.positions);
    for (const prefetch of ['0', '1', '2', '5']) {  // the tensor-core kernel's variants (indexer.cu)
      process.env.GLANCE_INDEXER_PREFETCH = prefetch;
      const out = new Float32Array(c.T * c.S).fill(Number.NaN);
      scores(out, x.q, x.weights, x.keys, x.keyScales, c.T, c.S, c.Hi, c.D, x.positions);
      assertClose(out, ref, `indexerScoresFp8 ${JSON.stringify({ ...c, positions: undefined })} prefetch ${prefetch}`, 1e-4);
    }
    delete process.env.GLANCE_INDEXER_PREFETCH;
  }
});

/** Fills a [T, S] score matrix with heavy ties, non-finite values and signed zeros. */
function tieScores(T: number, S: number): Float32Array {
  const a = new Float32Array(T * S);
  for (let i = 0; i < a.length; i++) {
    const r = rand();
    if (r < 0.05) a[i] = Number.NEGATIVE_INFINITY;
    else if (r < 0.06) a[i] = Number.NaN;
    else if (r < 0.065) a[i] = Number.POSITIVE_INFINITY;
    else if (r < 0.09) a[i] = rand() < 0.5 ? 0 : -0;
    else a[i] = randInt(21) - 10;
  }
  return a;
}

/** Continuous scores with `dupes` copies of the value ranked ~k·0.97, so that the threshold falls inside a run of
 *  equal keys (level 3 resolves ties) in long rows of few distinct ties. */
function dupeScores(T: number, S: number, k: number, dupes: number): Float32Array {
  const a = randF32(T * S, 100);
  for (let t = 0; t < T; t++) {
    const row = a.subarray(t * S, (t + 1) * S);
    const sorted = Float32Array.from(row).sort((x, y) => y - x);
    const v = sorted[Math.min(S - 1, Math.floor(k * 0.97))];
    for (let i = 0; i < dupes; i++) row[randInt(S)] = v;
  }
  return a;
}

test('cuda.topk is identical to the CPU op (ties, non-finite scores, k > S, multi-chunk rows)', { skip: SKIP }, () => {
  const topk = op('topk');
  const cases: Array<{ T: number; S: number; k: number; ties: boolean; dupes?: number }> = [
    { T: 1, S: 1, k: 1, ties: false },
    { T: 3, S: 100, k: 150, ties: true },
    { T: 2, S: 4096, k: 2048, ties: false },
    { T: 2, S: 4097, k: 2048, ties: true },
    { T: 1, S: 70000, k: 2048, ties: false },
    { T: 1, S: 70000, k: 2048, ties: true },
    { T: 5, S: 10001, k: 77, ties: false },
    { T: 4, S: 9000, k: 9000, ties: true },
    { T: 2, S: 0, k: 5, ties: false },
    { T: 70, S: 9000, k: 600, ties: true },
    // long decode rows (the single kernel's 1024-column chunks, and 4096 for two rows) with a run of ties at the threshold
    { T: 1, S: 131072, k: 2048, ties: false, dupes: 300 },
    { T: 1, S: 70001, k: 2048, ties: false, dupes: 5 },
    { T: 2, S: 131072, k: 2048, ties: false, dupes: 300 },
    { T: 3, S: 20000, k: 512, ties: false, dupes: 40 },
  ];
  for (const c of cases) {
    const scores = c.ties ? tieScores(c.T, c.S) : c.dupes ? dupeScores(c.T, c.S, c.k, c.dupes) : randF32(c.T * c.S, 100);
    if (!c.ties && c.S > 10) for (let i = 0; i < 10; i++) scores[randInt(scores.length)] = Number.NEGATIVE_INFINITY;
    const ref = new Int32Array(c.T * c.k).fill(-2);
    native.topk(ref, scores, c.T, c.S, c.k);
    for (const single of ['1', '0']) {  // one kernel with row barriers (small grids) and one kernel per pass
      process.env.GLANCE_TOPK_SINGLE = single;
      const out = new Int32Array(c.T * c.k).fill(-2);
      topk(out, scores, c.T, c.S, c.k);
      assertExact(out, ref, `topk ${JSON.stringify(c)} single-kernel ${single}`);
    }
    delete process.env.GLANCE_TOPK_SINGLE;
  }
  // every row -inf: all -1
  const out = new Int32Array(8).fill(-2);
  topk(out, new Float32Array(2 * 50).fill(Number.NEGATIVE_INFINITY), 2, 50, 4);
  assertExact(out, new Int32Array(8).fill(-1), 'topk all -inf');
});

test('cuda.indexerTopk selects the CPU op\'s tokens (tie-aware) and equals GPU scores + GPU top-k exactly', { skip: SKIP }, () => {
  const indexerTopk = op('indexerTopk');
  const scoresGpu = op('indexerScoresFp8');
  const topkGpu = op('topk');
  const cases = [
    { T: 1, S: 9000, Hi: 64, D: 128, k: 2048, chunkRows: 0 },
    { T: 2, S: 1500, Hi: 64, D: 128, k: 2048, chunkRows: 0 },
    { T: 10, S: 5000, Hi: 32, D: 128, k: 300, chunkRows: 3, causal: true },
    { T: 6, S: 800, Hi: 4, D: 32, k: 100, chunkRows: 4, causal: true },
  ];
  for (const c of cases) for (const [single, prefetch] of [['1', '0'], ['0', '0'], ['1', '5']]) {
    process.env.GLANCE_TOPK_SINGLE = single;
    process.env.GLANCE_INDEXER_PREFETCH = prefetch;
    const positions = c.causal ? Array.from({ length: c.T }, (_, t) => Math.floor(((t + 1) * c.S) / c.T) - 1) : undefined;
    const x = indexerInputs({ ...c, positions });
    const label = `indexerTopk ${JSON.stringify(c)} single-kernel top-k ${single} indexer variant ${prefetch}`;
    const idx = new Int32Array(c.T * c.k).fill(-2);
    indexerTopk(idx, x.q, x.weights, x.keys, x.keyScales, c.T, c.S, c.Hi, c.D, x.positions, c.k, c.chunkRows);
    // exact: GPU scores then GPU top-k
    const gs = new Float32Array(c.T * c.S).fill(Number.NaN);
    scoresGpu(gs, x.q, x.weights, x.keys, x.keyScales, c.T, c.S, c.Hi, c.D, x.positions);
    const gi = new Int32Array(c.T * c.k).fill(-2);
    topkGpu(gi, gs, c.T, c.S, c.k);
    assertExact(idx, gi, `${label} vs GPU scores + GPU top-k`);
    // tie-aware against the CPU
    const cs = new Float32Array(c.T * c.S);
    native.indexerScoresFp8(cs, x.q, x.weights, x.keys, x.keyScales, c.T, c.S, c.Hi, c.D, x.positions);
    const ci = new Int32Array(c.T * c.k);
    native.topk(ci, cs, c.T, c.S, c.k);
    for (let t = 0; t < c.T; t++) {
      const ours = Array.from(idx.subarray(t * c.k, (t + 1) * c.k)).filter((v) => v >= 0);
      const ref = Array.from(ci.subarray(t * c.k, (t + 1) * c.k)).filter((v) => v >= 0);
      assert.equal(ours.length, ref.length, `${label} row ${t}: selected count ${seedNote}`);
      for (let i = 1; i < ours.length; i++) assert.ok(ours[i] > ours[i - 1], `${label} row ${t}: not ascending`);
      const row = cs.subarray(t * c.S, (t + 1) * c.S);
      const threshold = Math.min(...ref.map((s) => row[s]));
      let maxAbs = 0;
      for (const s of ref) maxAbs = Math.max(maxAbs, Math.abs(row[s]));
      const slack = 1e-5 * maxAbs + 1e-30;
      const refSet = new Set(ref);
      const oursSet = new Set(ours);
      for (const s of ours)
        if (!refSet.has(s)) assert.ok(row[s] >= threshold - slack, `${label} row ${t}: ${s} (score ${row[s]}) is below the threshold ${threshold} ${seedNote}`);
      for (const s of ref)
        if (!oursSet.has(s)) assert.ok(row[s] <= threshold + slack, `${label} row ${t}: dropped ${s} (score ${row[s]}) above the threshold ${threshold} ${seedNote}`);
    }
    delete process.env.GLANCE_TOPK_SINGLE;
    delete process.env.GLANCE_INDEXER_PREFETCH;
  }
});

test('cuda.sparseMlaAttention matches the CPU mlaAttention on the same bf16 inputs (decode split-KV, prefill)', { skip: SKIP }, () => {
  const sparseMla = op('sparseMlaAttention');
  const cases = [
    { T: 1, H: 128, L: 512, R: 64, S: 5000, k: 2048 },
    { T: 2, H: 16, L: 64, R: 32, S: 300, k: 100, holes: true },
    { T: 3, H: 20, L: 128, R: 0, S: 90, k: 37, holes: true },
    { T: 1, H: 128, L: 512, R: 64, S: 40, k: 2048, holes: true },
    { T: 136, H: 64, L: 512, R: 64, S: 1000, k: 128 },
    { T: 1, H: 40, L: 512, R: 64, S: 3000, k: 700, holes: false },
  ];
  // kernel variants (sparse_mla.cu): the prefill kernel's two block shapes (GLANCE_MLA_WIDE_WARPS); decode with 16,
  // 32 or 64 heads per block and fp32 or bf16 split partials (shapes that do not take a path ignore its switch)
  const variants: Array<Record<string, string>> = [
    { GLANCE_MLA_WIDE_WARPS: '16' },
    { GLANCE_MLA_WIDE_WARPS: '8' },
    { GLANCE_MLA_DECODE_HEADS: '32' },
    { GLANCE_MLA_DECODE_HEADS: '64' },
    { GLANCE_MLA_DECODE_HEADS: '16', GLANCE_MLA_PARTIAL_BF16: '1' },
    { GLANCE_MLA_DECODE_HEADS: '32', GLANCE_MLA_PARTIAL_BF16: '1' },
    { GLANCE_MLA_DECODE_HEADS: '64', GLANCE_MLA_PARTIAL_BF16: '1' },
  ];
  for (const c of cases) {
    const D = c.L + c.R;
    const q = toBf16(randF32(c.T * c.H * D, 1));
    const kv = toBf16(randF32(c.S * D, 1));
    const indices = new Int32Array(c.T * c.k);
    for (let i = 0; i < indices.length; i++) indices[i] = c.holes && rand() < 0.2 ? -1 : randInt(c.S);
    if (c.holes) indices.fill(-1, 0, c.k); // query 0 sees nothing: out = 0
    const scale = 1 / Math.sqrt(128 + c.R);
    const positions = new Int32Array(c.T).fill(c.S - 1);
    const ref = new Float32Array(c.T * c.H * c.L).fill(Number.NaN);
    native.mlaAttention(ref, q.values, kv.values, c.S, c.T, c.H, c.L, c.R, scale, indices, c.k, positions);
    for (const env of variants) {
      Object.assign(process.env, env);
      const out = new Float32Array(c.T * c.H * c.L).fill(Number.NaN);
      sparseMla(out, q.bits, kv.bits, c.S, c.T, c.H, c.L, c.R, scale, indices, c.k);
      for (const name of Object.keys(env)) delete process.env[name];
      assertClose(out, ref, `sparseMlaAttention ${JSON.stringify(c)} ${JSON.stringify(env)}`, 1e-2);
      if (c.holes) for (let i = 0; i < c.H * c.L; i++) assert.equal(out[i], 0, 'a query with no valid index gives 0');
    }
  }
  assert.throws(() => sparseMla(new Float32Array(8), new Uint16Array(1 * 1 * 12), new Uint16Array(12), 1, 1, 1, 8, 4, 1, Int32Array.of(0), 1), RangeError);
  assert.throws(() => sparseMla(new Float32Array(16), new Uint16Array(16), new Uint16Array(16), 1, 1, 1, 16, 0, 1, Int32Array.of(1), 1), /outside \[-1, S\)/);
});
