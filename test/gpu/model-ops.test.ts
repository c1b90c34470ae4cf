// The model ops of the GPU forward pass (kernels/cuda/{gemm,model_ops}.cu) against the CPU ops of the same contract,
// on fresh random inputs of several shapes (tile-awkward ones included), with poisoned outputs so that an unwritten
// element fails. Tolerances: fp32-math paths 1e-5 (summation order only); the tensor-core GEMM (bf16 operands) 1e-2.
import assert from 'node:assert/strict';
import test from 'node:test';

import type { RouterOptions, WeightDType } from '../../sidecar/src/native/contract';
import {
  DTYPES, assertClose, assertExact, gpuSkipReason, modelOps, native, poisoned, rand, randF32, randInt, randomWeight, roundBf16, seedNote,
} from './gpu-helpers';

const skip = gpuSkipReason();
const ops = skip ? (null as unknown as ReturnType<typeof modelOps>) : modelOps();

// [T, rows, cols]: GEMV (T ≤ 8) and GEMM tiles (64×64×32), with rows/cols off the tile and off 8 (scalar loads).
const MATMUL_SHAPES: [number, number, number][] = [
  [1, 64, 64], [1, 333, 384], [2, 129, 200], [3, 96, 100], [4, 130, 136], [8, 7, 24], [9, 65, 72],
  [17, 130, 136], [64, 256, 384], [100, 77, 97], [257, 192, 384],
];

test('matmul: GEMV and tensor-core GEMM (split and plain bf16) vs CPU, every weight dtype', { skip }, () => {
  for (const dtype of DTYPES) {
    for (const [T, rows, cols] of MATMUL_SHAPES) {
      const w = randomWeight(dtype, rows, cols);
      const x = randF32(T * cols);
      const ref = new Float32Array(T * rows);
      native.matmul(ref, x, T, w);
      for (const path of ['gemv', 'gemm', 'gemm-bf16', 'auto'] as const) {
        const out = poisoned(T * rows);
        ops.matmul(out, x, T, w, path);
        // GEMV keeps fp32 math; the split-bf16 GEMM is fp32-grade; plain bf16 operands ≈ 4e-3 (fp32 accumulation).
        const tol = path === 'gemv' || (path === 'auto' && T <= 8) ? 1e-5 : path === 'gemm-bf16' ? 1e-2 : 1e-4;
        assertClose(out, ref, `matmul ${dtype} [${T}×${cols}]·[${rows}×${cols}]ᵀ ${path}`, tol);
      }
    }
  }
});

test('fused SwiGLU GEMV (decode MLP) vs CPU matmul + siluMul', { skip }, () => {
  for (const dtype of DTYPES) {
    for (const [T, I, D] of [[1, 96, 384], [3, 1024, 384], [8, 37, 100]]) {
      const gate = randomWeight(dtype, I, D);
      const up = randomWeight(dtype, I, D);
      const x = randF32(T * D);
      const g = new Float32Array(T * I);
      const u = new Float32Array(T * I);
      native.matmul(g, x, T, gate);
      native.matmul(u, x, T, up);
      native.siluMul(g, g, u, T * I);
      const out = poisoned(T * I);
      ops.swiglu(out, x, T, gate, up);
      assertClose(out, g, `swiglu ${dtype} T${T} [${I}×${D}]`, 1e-5);
    }
  }
});

test('GEMV batch (one launch, RMSNorm folded in, mixed dtypes, SwiGLU jobs) vs CPU rmsNorm + matmul', { skip }, () => {
  // [T, cols, rows of the jobs]; cols 100 takes the scalar path, 384/192 the vector path
  const shapes: [number, number, number[]][] = [[1, 384, [192, 224, 64, 4]], [3, 192, [576, 256]], [8, 100, [37, 9, 130]], [2, 384, [16, 96]]];
  for (const [T, cols, rows] of shapes) {
    for (const withNorm of [true, false]) {
      const x = randF32(T * cols, 3);
      const nw = randF32(cols);
      const xn = new Float32Array(T * cols);
      if (withNorm) native.rmsNorm(xn, x, T, cols, nw, 1e-6);
      else xn.set(x);
      const jobs = rows.map((r, i) => {
        const dtype = DTYPES[i % DTYPES.length];
        const swiglu = i === 1;
        return { w: randomWeight(dtype, r, cols), up: swiglu ? randomWeight(dtype, r, cols) : undefined, out: poisoned(T * r), dtype, r };
      });
      ops.gemvBatch(x, T, withNorm ? nw : null, 1e-6, jobs.map(({ w, up, out }) => ({ w, up, out })));
      for (const j of jobs) {
        const ref = new Float32Array(T * j.r);
        native.matmul(ref, xn, T, j.w);
        if (j.up) {
          const u = new Float32Array(T * j.r);
          native.matmul(u, xn, T, j.up);
          native.siluMul(ref, ref, u, T * j.r);
        }
        assertClose(j.out, ref, `gemvBatch ${j.dtype}${j.up ? ' swiglu' : ''} T${T} [${j.r}×${cols}] ${withNorm ? 'normed' : 'plain'}`, 1e-5);
      }
    }
  }
});

test('embedding rows equal the CPU dequantisation', { skip }, () => {
  for (const dtype of DTYPES) {
    const w = randomWeight(dtype, 300, 136);
    const ids = Int32Array.from({ length: 13 }, () => randInt(300));
    const ref = new Float32Array(13 * 136);
    native.embedding(ref, ids, w);
    const out = poisoned(13 * 136);
    ops.embedding(out, ids, w);
    assertExact(out, ref, `embedding ${dtype}`);
  }
});

test('rmsNorm and layerNorm vs CPU', { skip }, () => {
  for (const [T, dim] of [[1, 64], [5, 384], [3, 1000], [2, 7168]]) {
    const x = randF32(T * dim, 3);
    const w = randF32(dim);
    const b = randF32(dim);
    const ref = new Float32Array(T * dim);
    native.rmsNorm(ref, x, T, dim, w, 1e-6);
    const out = poisoned(T * dim);
    ops.rmsNorm(out, x, T, dim, w, 1e-6);
    assertClose(out, ref, `rmsNorm [${T}×${dim}]`, 1e-5);
    native.layerNorm(ref, x, T, dim, w, b, 1e-6);
    out.fill(NaN);
    ops.layerNorm(out, x, T, dim, w, b, 1e-6);
    assertClose(out, ref, `layerNorm [${T}×${dim}]`, 1e-5);
  }
});

test('rope, interleaved (MLA) and half-split (indexer), YaRN factor, vs CPU', { skip }, () => {
  for (const [T, H, stride, offset, rd] of [[1, 1, 96, 64, 32], [7, 6, 96, 64, 32], [3, 4, 64, 0, 64], [5, 1, 576, 512, 64], [2, 8, 33, 1, 16]]) {
    const inv = Float32Array.from({ length: rd / 2 }, (_, i) => Math.pow(10000, (-2 * i) / rd));
    const pos = Int32Array.from({ length: T }, () => randInt(131072));
    for (const il of [true, false]) {
      const x = randF32(T * H * stride);
      const a = x.slice();
      const b = x.slice();
      native.rope(a, T, H, stride, offset, rd, pos, inv, 1.2, il);
      ops.rope(b, T, H, stride, offset, rd, pos, inv, 1.2, il);
      assertClose(b, a, `rope T${T} H${H} stride${stride} off${offset} d${rd} ${il ? 'interleaved' : 'half'}`, 1e-5);
    }
  }
});

test('siluMul vs CPU', { skip }, () => {
  for (const n of [1, 31, 1000, 65537]) {
    const g = randF32(n, 6);
    const u = randF32(n, 2);
    const ref = new Float32Array(n);
    native.siluMul(ref, g, u, n);
    const out = poisoned(n);
    ops.siluMul(out, g, u, n);
    assertClose(out, ref, `siluMul ${n}`, 1e-6);
  }
});

test('MLA query absorption and value expansion vs CPU', { skip }, () => {
  for (const [T, H, nope, v, L] of [[1, 6, 64, 64, 192], [3, 4, 16, 16, 32], [2, 16, 128, 128, 512], [5, 3, 24, 40, 200]]) {
    for (const dtype of ['BF16', 'F8_E4M3', 'F32'] as WeightDType[]) {
      const kvB = randomWeight(dtype, H * (nope + v), L);
      const qStride = nope + 8;
      const outStride = L + 5;
      const q = randF32(T * H * qStride);
      const ref = new Float32Array(T * H * outStride);
      native.mlaAbsorbQuery(ref, outStride, q, qStride, T, H, nope, v, kvB);
      const out = ref.slice();
      for (let t = 0; t < T * H; t++) out.fill(NaN, t * outStride, t * outStride + L);
      ops.mlaAbsorbQuery(out, outStride, q, qStride, T, H, nope, v, kvB);
      assertClose(out, ref, `absorb ${dtype} T${T} H${H} nope${nope} L${L}`, 1e-5);
      const o = randF32(T * H * L);
      const ref2 = new Float32Array(T * H * v);
      native.mlaExpandValue(ref2, o, T, H, nope, v, kvB);
      const out2 = poisoned(T * H * v);
      ops.mlaExpandValue(out2, o, T, H, nope, v, kvB);
      assertClose(out2, ref2, `expand ${dtype} T${T} H${H} v${v} L${L}`, 1e-5);
    }
  }
});

test('MLA query absorption with the RoPE of the rope part folded in vs CPU rope + absorption', { skip }, () => {
  for (const [T, H, nope, v, L, R] of [[1, 6, 64, 64, 192, 32], [3, 4, 16, 16, 32, 8], [2, 16, 128, 128, 512, 64]]) {
    const kvB = randomWeight('F8_E4M3', H * (nope + v), L);
    const qStride = nope + R;
    const outStride = L + R;
    const q = randF32(T * H * qStride);
    const inv = Float32Array.from({ length: R / 2 }, (_, i) => Math.pow(10000, (-2 * i) / R));
    const pos = Int32Array.from({ length: T }, () => randInt(131072));
    const ref = new Float32Array(T * H * outStride);
    const qr = q.slice();
    native.rope(qr, T, H, qStride, nope, R, pos, inv, 1.1, true);
    native.mlaAbsorbQuery(ref, outStride, qr, qStride, T, H, nope, v, kvB);
    for (let th = 0; th < T * H; th++) ref.set(qr.subarray(th * qStride + nope, th * qStride + nope + R), th * outStride + L);
    const out = poisoned(T * H * outStride);
    ops.mlaAbsorbQueryRope(out, outStride, q, qStride, T, H, nope, v, R, kvB, pos, inv, 1.1);
    assertClose(out, ref, `absorb+rope T${T} H${H} nope${nope} L${L} R${R}`, 1e-5);
  }
});

test('latent MQA attention, dense causal and sparse (−1 padded, k > candidates), vs CPU on the same bf16 rows', { skip }, () => {
  for (const [S, T, H, L, R, k] of [[40, 1, 6, 192, 32, 16], [300, 3, 6, 192, 32, 256], [1000, 2, 16, 512, 64, 64], [17, 4, 4, 32, 16, 24], [5000, 1, 2, 32, 16, 2048]]) {
    const kv = roundBf16(randF32(S * (L + R)));
    const q = randF32(T * H * (L + R));
    const pos = Int32Array.from({ length: T }, (_, t) => S - T + t);
    const scale = 1 / Math.sqrt(L + R);
    for (const sparse of [false, true]) {
      let idx: Int32Array | null = null;
      if (sparse) {
        idx = new Int32Array(T * k).fill(-1);
        for (let t = 0; t < T; t++) {
          const n = Math.min(k, pos[t] + 1);
          // a random increasing subset of [0, pos] of size ≤ n, −1 padded
          let c = 0;
          for (let s = 0; s <= pos[t] && c < n; s++) if (rand() < n / (pos[t] + 1) + 0.05) idx[t * k + c++] = s;
        }
      }
      const ref = new Float32Array(T * H * L);
      native.mlaAttention(ref, q, kv, S, T, H, L, R, scale, idx, sparse ? k : 0, pos);
      const out = poisoned(T * H * L);
      ops.mlaAttention(out, q, kv, S, T, H, L, R, scale, idx, sparse ? k : 0, pos);
      assertClose(out, ref, `attention S${S} T${T} H${H} L${L}+${R} ${sparse ? `sparse k${k}` : 'dense'}`, 1e-5);
    }
  }
});

test('indexer scores (fp32 keys and the FP8 132-byte cache) vs CPU, causal −inf', { skip }, () => {
  for (const [T, S, Hi, D] of [[1, 300, 4, 64], [3, 1000, 8, 32], [2, 4097, 64, 128], [5, 77, 3, 16]]) {
    const pos = Int32Array.from({ length: T }, (_, t) => S - T + t - randInt(3));
    const w = randF32(T * Hi);
    const q = randF32(T * Hi * D);
    const keys = randF32(S * D);
    const ref = new Float32Array(T * S);
    native.indexerScores(ref, q, w, keys, T, S, Hi, D, pos);
    const out = poisoned(T * S);
    ops.indexerScores(out, q, w, keys, T, S, Hi, D, pos);
    assertClose(out, ref, `indexer f32 T${T} S${S} ${Hi}×${D}`, 1e-5);
    // FP8: quantise q and keys with the CPU op, score both ways
    const q8 = new Uint8Array(T * Hi * D);
    const qs = new Float32Array(T * Hi);
    native.quantizeFp8Rows(q8, qs, q, T * Hi, D);
    const k8 = new Uint8Array(S * D);
    const ks = new Float32Array(S);
    native.quantizeFp8Rows(k8, ks, keys, S, D);
    native.indexerScoresFp8(ref, q8, w, k8, ks, T, S, Hi, D, pos);
    out.fill(NaN);
    ops.indexerScoresFp8(out, q8, w, k8, ks, T, S, Hi, D, pos);
    assertClose(out, ref, `indexer fp8 T${T} S${S} ${Hi}×${D}`, 1e-5);
  }
});

test('Hadamard + e4m3 row quantiser: identical bytes and scales to the CPU ops', { skip }, () => {
  for (const [N, D] of [[1, 128], [37, 64], [5, 32], [300, 128], [4, 16]]) {
    const x = randF32(N * D, 10);
    for (let i = 0; i < N * D; i += 17) x[i] *= 1e-6; // small values through the subnormal codes
    const h = x.slice();
    native.hadamardRows(h, N, D);
    const ref = new Uint8Array(N * D);
    const rs = new Float32Array(N);
    native.quantizeFp8Rows(ref, rs, h, N, D);
    const out = new Uint8Array(N * D).fill(0x7f);
    const os = poisoned(N);
    ops.hadamardQuantRows(out, os, x, N, D);
    assertExact(os, rs, `scales N${N} D${D}`);
    assertExact(out, ref, `bytes N${N} D${D}`);
  }
});

test('top-k: exact equality with the CPU (ties, −inf, k > finite count, long rows)', { skip }, () => {
  const cases: [number, number, number, string][] = [
    [1, 300, 256, 'random'], [3, 5000, 2048, 'random'], [2, 1000, 16, 'ties'], [2, 4096, 512, 'coarse'],
    [1, 131072, 2048, 'random'], [4, 100, 256, 'causal'], [1, 3000, 2048, 'negzero'],
  ];
  for (const [T, S, k, kind] of cases) {
    const scores = new Float32Array(T * S);
    for (let i = 0; i < scores.length; i++) {
      if (kind === 'ties') scores[i] = randInt(4);
      else if (kind === 'coarse') scores[i] = Math.round(rand() * 50) / 10;
      else if (kind === 'negzero') scores[i] = rand() < 0.5 ? -0 : 0;
      else scores[i] = rand() * 2 - 1;
      if (kind === 'causal' && i % S > 40 + Math.floor(i / S)) scores[i] = -Infinity;
    }
    const ref = new Int32Array(T * k);
    native.topk(ref, scores, T, S, k);
    const out = new Int32Array(T * k).fill(-7);
    ops.topk(out, scores, T, S, k);
    assertExact(out, ref, `topk ${kind} T${T} S${S} k${k}`);
  }
});

test('MoE routing: every scoring and group method, vs CPU', { skip }, () => {
  const configs: [number, number, Omit<RouterOptions, 'bias'>, boolean][] = [
    [16, 2, { scoring: 'sigmoid', method: 'noaux_tc', nGroup: 4, topkGroup: 2, normTopk: true, scale: 2.5 }, true],
    [256, 8, { scoring: 'sigmoid', method: 'noaux_tc', nGroup: 8, topkGroup: 4, normTopk: true, scale: 2.5 }, true],
    [8, 2, { scoring: 'softmax', method: 'greedy', nGroup: 1, topkGroup: 1, normTopk: false, scale: 1 }, false],
    [64, 6, { scoring: 'softmax', method: 'group_limited_greedy', nGroup: 8, topkGroup: 3, normTopk: false, scale: 1 }, false],
  ];
  for (const [E, K, o, withBias] of configs) {
    const T = 37;
    const logits = randF32(T * E, 4);
    const opts: RouterOptions = { ...o, bias: withBias ? randF32(E, 0.5) : null };
    const rid = new Int32Array(T * K);
    const rw = new Float32Array(T * K);
    native.moeRoute(rid, rw, logits, T, E, K, opts);
    const id = new Int32Array(T * K).fill(-1);
    const w = poisoned(T * K);
    ops.moeRoute(id, w, logits, T, E, K, opts);
    assertExact(id, rid, `route ids E${E} K${K} ${o.method}`);
    assertClose(w, rw, `route weights E${E} K${K} ${o.method}`, 1e-5);
  }
});

test('MoE experts: permutation + grouped GEMM and grouped GEMV vs the CPU composition', { skip }, () => {
  for (const [T, E, K, D, I, dtype] of [[1, 16, 2, 384, 96, 'F8_E4M3'], [3, 8, 2, 64, 32, 'F32'], [200, 16, 2, 384, 96, 'F8_E4M3'], [70, 32, 8, 256, 136, 'BF16']] as [number, number, number, number, number, WeightDType][]) {
    const gate = Array.from({ length: E }, () => randomWeight(dtype, I, D));
    const up = Array.from({ length: E }, () => randomWeight(dtype, I, D));
    const down = Array.from({ length: E }, () => randomWeight(dtype, D, I));
    const x = randF32(T * D);
    const ids = new Int32Array(T * K);
    for (let t = 0; t < T; t++) {
      const pick = new Set<number>();
      while (pick.size < K) pick.add(randInt(E));
      ids.set([...pick], t * K);
    }
    const wts = Float32Array.from({ length: T * K }, () => rand());
    // CPU: out[t] = Σ_j w · down(silu(gate x) · up x)
    const ref = new Float32Array(T * D);
    const g = new Float32Array(I);
    const u = new Float32Array(I);
    const y = new Float32Array(D);
    for (let t = 0; t < T; t++) {
      const xt = x.subarray(t * D, t * D + D);
      for (let j = 0; j < K; j++) {
        const e = ids[t * K + j];
        native.matmul(g, xt, 1, gate[e]);
        native.matmul(u, xt, 1, up[e]);
        native.siluMul(g, g, u, I);
        native.matmul(y, g, 1, down[e]);
        for (let d = 0; d < D; d++) ref[t * D + d] += wts[t * K + j] * y[d];
      }
    }
    for (const path of T === 1 ? ['gemv', 'gemv-swiglu', 'gemm', 'decode-fused'] as const : ['gemv', 'gemv-swiglu', 'gemm'] as const) {
      const out = poisoned(T * D);
      ops.moeExperts(out, x, T, ids, wts, gate, up, down, path);
      assertClose(out, ref, `experts ${path} T${T} E${E} K${K} ${dtype}`, path === 'gemm' ? 1e-4 : 1e-5);
    }
  }
});

test('sampling on the GPU: argmax (lowest index on ties) and inverse-CDF draws', { skip }, () => {
  for (const V of [10, 24576, 129280]) {
    const logits = randF32(V, 5);
    let best = 0;
    for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    assert.equal(ops.sample(logits, 0, 0.5), best, `argmax V${V} ${seedNote}`);
    logits[V - 1] = logits[best];
    assert.equal(ops.sample(logits, 0, 0.5), best, `argmax tie V${V}`);
  }
  // Temperature: compare with a float64 inverse CDF away from interval edges.
  const V = 50;
  const logits = randF32(V, 2);
  const temp = 0.7;
  const m = Math.max(...logits);
  const p = Array.from(logits, (l) => Math.exp((l - m) / temp));
  const sum = p.reduce((a, b) => a + b, 0);
  let acc = 0;
  for (let i = 0; i < V; i++) {
    const lo = acc / sum;
    acc += p[i];
    const hi = acc / sum;
    if (hi - lo < 1e-4) continue;
    const u = (lo + hi) / 2;
    assert.equal(ops.sample(logits, temp, u), i, `draw u=${u} lands in token ${i}`);
  }
});
