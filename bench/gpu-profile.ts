// One call of each decode-path attention op at the benchmark shapes, for a profiler to look at:
//   ncu --kernel-name regex:"indexer_fp8|topk_|sparse_mla" --section SpeedOfLight node dist/bench/gpu-profile.js
// (host-array bindings: the uploads are not kernels, so only the ops' kernels show up).

import { loadNative } from '../sidecar/src/native/index';

const native = loadNative();
if (!native.cudaInfo().available) {
  console.log(`no usable CUDA device: ${native.cudaInfo().reason}`);
  process.exit(0);
}
const cuda = native.cuda;
const S = 131072, Hi = 64, D = 128, k = 2048;
const bytes = (n: number): Uint8Array => {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    let b = (Math.random() * 256) | 0;
    if ((b & 0x7f) === 0x7f) b ^= 1;
    a[i] = b;
  }
  return a;
};
const q = bytes(Hi * D), keys = bytes(S * D);
const keyScales = new Float32Array(S).map(() => 2 ** (-12 + ((Math.random() * 7) | 0)));
const weights = new Float32Array(Hi).map(() => Math.random() * 0.03 - 0.01);
const idx = new Int32Array(k);
cuda.indexerTopk!(idx, q, weights, keys, keyScales, 1, S, Hi, D, Int32Array.of(S - 1), k, 0);

const L = 512, R = 64, H = 128, Skv = 16384;
const bf16 = (n: number): Uint16Array => new Uint16Array(n).map(() => 0x3c00 + ((Math.random() * 0x400) | 0) - (Math.random() < 0.5 ? 0 : 0x8000));
const out = new Float32Array(H * L);
const sel = new Int32Array(k).map(() => (Math.random() * Skv) | 0);
cuda.sparseMlaAttention!(out, bf16(H * (L + R)), bf16(Skv * (L + R)), Skv, 1, H, L, R, 0.1, sel, k);
console.log('profiled: indexerTopk (S = 131072) and sparseMlaAttention (128 heads, k = 2048)');
