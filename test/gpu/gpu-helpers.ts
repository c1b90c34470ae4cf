// Shared by the GPU tests (npm run test:gpu): the skip reason where no GPU is usable, a seeded RNG, comparisons,
// random weights in every dtype. The CPU ops of the same addon are the references (they are themselves tested
// against float64 in test/unit/kernels.test.ts).
import assert from 'node:assert/strict';

import type { NativeAddon, NativeWeight, WeightDType } from '../../sidecar/src/native/contract';
import { loadNative } from '../../sidecar/src/native/index';
import { assertExact } from '../helpers/kernel-checks';
import { encodeValues, quantizeFp8Blockwise } from '../helpers/safetensors-writer';
import { SEED, poisoned, rand, randF32, randInt, seedNote } from '../helpers/seeded-random';

// The seeded RNG (GLANCE_TEST_SEED replays) and assertExact are the unit tests' own; the GPU tests import them from here.
export { SEED, assertExact, poisoned, rand, randF32, randInt, seedNote };

export const native: NativeAddon = loadNative();

/** false when a CUDA device is usable, else the reason (printed by node:test as the skip reason). */
export function gpuSkipReason(): string | false {
  const info = native.cudaInfo();
  if (!info.built) return `no GPU test: ${info.reason}`;
  if (!info.available) return `no GPU test: ${info.reason}`;
  return false;
}

/** ‖ours − ref‖/‖ref‖ over the finite entries of ref; non-finite entries of ref must match exactly; a non-finite
 *  entry of ours where ref is finite (an unwritten, poisoned element) fails. */
export function assertClose(ours: ArrayLike<number>, ref: ArrayLike<number>, label: string, tol: number): number {
  assert.equal(ours.length, ref.length, `${label}: length`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const r = ref[i];
    const o = ours[i];
    if (!Number.isFinite(r)) {
      assert.ok(Object.is(o, r) || (Number.isNaN(r) && Number.isNaN(o)), `${label}: element ${i} is ${o}, expected ${r} ${seedNote}`);
      continue;
    }
    assert.ok(Number.isFinite(o), `${label}: element ${i} is ${o}, expected ${r} (unwritten?) ${seedNote}`);
    num += (o - r) * (o - r);
    den += r * r;
  }
  const rel = den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
  assert.ok(rel <= tol, `${label}: relative error ${rel.toExponential(3)} > ${tol} ${seedNote}`);
  return rel;
}

export const DTYPES: WeightDType[] = ['F32', 'BF16', 'F16', 'F8_E4M3'];

/** A random [rows, cols] weight in `dtype` (FP8: DeepSeek 128×128 block quantisation of uniform values). */
export function randomWeight(dtype: WeightDType, rows: number, cols: number, scale = 0.5): NativeWeight {
  const v = randF32(rows * cols, scale);
  if (dtype === 'F8_E4M3') {
    const q = quantizeFp8Blockwise(v, rows, cols);
    return native.createWeight(q.data, 'F8_E4M3', rows, cols, q.scaleInv);
  }
  const bytes = encodeValues(v, dtype === 'F32' ? 'F32' : dtype === 'BF16' ? 'BF16' : 'F16');
  return native.createWeight(bytes, dtype, rows, cols);
}

/** fp32 values rounded to bf16 (nearest even), as the GPU latent cache stores them. */
export function roundBf16(a: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  const u = new Uint32Array(out.buffer);
  out.set(a);
  for (let i = 0; i < u.length; i++) {
    const x = u[i];
    u[i] = ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) << 16;
  }
  return out;
}

/** The addon's cuda.modelOps (kernels/binding/cuda_model.cc); host arrays in and out. */
export interface ModelOps {
  matmul(out: Float32Array, x: Float32Array, T: number, w: NativeWeight, path: 'auto' | 'gemv' | 'gemm' | 'gemm-bf16'): void;
  embedding(out: Float32Array, ids: Int32Array, w: NativeWeight): void;
  rmsNorm(out: Float32Array, x: Float32Array, T: number, dim: number, weight: Float32Array, eps: number): void;
  layerNorm(out: Float32Array, x: Float32Array, T: number, dim: number, weight: Float32Array, bias: Float32Array, eps: number): void;
  rope(x: Float32Array, T: number, nHeads: number, headStride: number, offset: number, ropeDim: number, positions: Int32Array,
    invFreq: Float32Array, attentionFactor: number, interleaved: boolean): void;
  siluMul(out: Float32Array, gate: Float32Array, up: Float32Array, n: number): void;
  mlaAbsorbQuery(out: Float32Array, outStride: number, q: Float32Array, qStride: number, T: number, H: number, nope: number, v: number, kvB: NativeWeight): void;
  mlaExpandValue(out: Float32Array, o: Float32Array, T: number, H: number, nope: number, v: number, kvB: NativeWeight): void;
  mlaAttention(out: Float32Array, q: Float32Array, kv: Float32Array, S: number, T: number, H: number, kvLora: number, rope: number,
    scale: number, indices: Int32Array | null, k: number, positions: Int32Array): void;
  indexerScores(out: Float32Array, q: Float32Array, w: Float32Array, keys: Float32Array, T: number, S: number, Hi: number, D: number, positions: Int32Array): void;
  indexerScoresFp8(out: Float32Array, q: Uint8Array, w: Float32Array, keys: Uint8Array, keyScales: Float32Array, T: number, S: number,
    Hi: number, D: number, positions: Int32Array): void;
  hadamardQuantRows(out: Uint8Array, scales: Float32Array, x: Float32Array, N: number, D: number): void;
  topk(idx: Int32Array, scores: Float32Array, T: number, S: number, k: number): void;
  moeRoute(ids: Int32Array, weights: Float32Array, logits: Float32Array, T: number, E: number, K: number, opts: object): void;
  moeExperts(out: Float32Array, x: Float32Array, T: number, ids: Int32Array, weights: Float32Array, gate: NativeWeight[], up: NativeWeight[],
    down: NativeWeight[], path: 'gemv' | 'gemv-swiglu' | 'gemm' | 'decode-fused'): void;
  gemvBatch(x: Float32Array, T: number, normWeight: Float32Array | null, eps: number,
    jobs: { w: NativeWeight; up?: NativeWeight; out: Float32Array }[]): void;
  mlaAbsorbQueryRope(out: Float32Array, outStride: number, q: Float32Array, qStride: number, T: number, H: number, nope: number,
    v: number, rope: number, kvB: NativeWeight, positions: Int32Array, invFreq: Float32Array, attentionFactor: number): void;
  swiglu(out: Float32Array, x: Float32Array, T: number, gate: NativeWeight, up: NativeWeight): void;
  sample(logits: Float32Array, temperature: number, u: number): number;
}

export function modelOps(): ModelOps {
  return (native.cuda as unknown as { modelOps: ModelOps }).modelOps;
}
