// The contract of the native addon (kernels/): every op the engine calls, with its exact semantics.
// A CPU version (kernels/cpu) implements each op; a CUDA version with the same contract sits beside it
// later (kernels/cuda). Conventions for every op:
//   - tensors are dense row-major Float32Array / Int32Array views, shapes given in the doc comment;
//   - ops are synchronous and multithreaded inside (a persistent pool over all cores);
//   - a shape or length that does not fit throws a TypeError/RangeError naming the argument, never
//     reads or writes out of bounds;
//   - accumulation is fp32; weights are dequantised on the fly (never expanded in memory).

/** Storage dtypes of weights, as safetensors names them (F8_E4M3 = DeepSeek FP8 with 128×128 block scales). */
export type WeightDType = 'F32' | 'BF16' | 'F16' | 'F8_E4M3';

/** A 2-D weight [rows, cols] (row-major, as nn.Linear stores [out, in]) registered with the addon. */
export interface NativeWeight {
  readonly rows: number;
  readonly cols: number;
  readonly dtype: WeightDType;
}

export interface BackendInfo {
  cpu: {
    threads: number;
    simd: string;
    /** attention over a bf16 latent cache uses AVX-512-BF16 dot products */
    bf16Dot: boolean;
    /** AMX tiles run the FP8 indexer (up to 16 heads, D = 64 or 128) and the attention over a bf16 cache */
    amx: boolean;
  };
  cuda: { built: boolean; devices: number; error?: string };
}

/** What the addon sees of CUDA (cudaInfo()). built: compiled with nvcc; available: a device this build runs on. */
export interface CudaInfo {
  built: boolean;
  available: boolean;
  count: number;
  name: string;
  /** Why there is no usable device ('' when available), e.g. "no CUDA device: CUDA driver version is insufficient…". */
  reason: string;
  computeCapability: string;
  multiprocessors: number;
  memoryBytes: number;
  l2Bytes: number;
  runtimeVersion: number;
  driverVersion: number;
}

/** Op-level CUDA bindings (kernels/binding/cuda_*.cc): host arrays in, host arrays out; every call copies its inputs
 *  to the device, runs the kernel and copies the outputs back (for tests and benchmarks). Same contracts as the CPU
 *  ops of the same name unless said otherwise. An empty object when the addon was built without CUDA
 *  (cudaInfo().built = false); the ops throw an Error naming the CUDA failure when no device is usable. */
export interface CudaOps {
  /** hadamardRows on the GPU (bit-identical to the CPU op). D ≤ 8192. */
  hadamardRows?(x: Float32Array, N: number, D: number): void;
  /** quantizeFp8Rows on the GPU (bit-identical bytes and scales). */
  quantizeFp8Rows?(out: Uint8Array, scales: Float32Array, x: Float32Array, N: number, D: number): void;
  /** indexerScoresFp8 on the GPU (same contract; fp32 sums in another order). */
  indexerScoresFp8?(
    out: Float32Array, q: Uint8Array, weights: Float32Array, keys: Uint8Array, keyScales: Float32Array,
    T: number, S: number, Hi: number, D: number, positions: Int32Array,
  ): void;
  /** indexerScoresFp8 then topk, chunked over queries (chunkRows queries' logits at a time; 0 = about 1 GiB):
   *  the token selection of a decode step or a prefill. idx: [T, k]. */
  indexerTopk?(
    idx: Int32Array, q: Uint8Array, weights: Float32Array, keys: Uint8Array, keyScales: Float32Array,
    T: number, S: number, Hi: number, D: number, positions: Int32Array, k: number, chunkRows: number,
  ): void;
  /** topk on the GPU: identical output to the CPU op (ascending columns, lower columns win ties, −1 padding). */
  topk?(idx: Int32Array, scores: Float32Array, T: number, S: number, k: number): void;
  /** Sparse absorbed-MLA attention (mlaAttention's sparse case) with bf16 q [T, H, kvLora+rope] and kv
   *  [S, kvLora+rope] given as bf16 bit patterns; out fp32 [T, H, kvLora]; indices [T, k] (−1 = skip).
   *  Needs kvLora % 16 = 0, kvLora ≤ 512, (kvLora + rope) % 8 = 0. */
  sparseMlaAttention?(
    out: Float32Array, q: Uint16Array, kv: Uint16Array, S: number, T: number, H: number,
    kvLora: number, rope: number, scale: number, indices: Int32Array, k: number,
  ): void;
  /** Device-to-device copy bandwidth (read + written bytes per second). */
  benchCopy?(megabytes: number): { gbps: number; us: number };
  /** Decode token selection (indexer scores + top-k) on device-generated inputs; medians in µs. */
  benchIndexerDecode?(opts: {
    S?: number; Hi?: number; D?: number; k?: number; T?: number; iters?: number; prefetch?: 0 | 1 | 2; topkSingle?: 0 | 1;
  }): {
    indexerUs: number; indexerGraphUs: number; topkGraphUs: number; streamUs: number; graphUs: number;
    keyBytes: number; copies: number;
  };
  /** Sparse MLA on device-generated inputs; medians in µs; flops = 2·T·H·k·(2·kvLora + rope). */
  benchSparseMla?(opts: {
    S?: number; T?: number; H?: number; kvLora?: number; rope?: number; k?: number; iters?: number; graph?: boolean;
  }): { streamUs: number; graphUs: number; flops: number };
  /** Causal prefill token selection over T tokens (chunked indexer + top-k); median ms. */
  benchIndexerPrefill?(opts: { T?: number; Hi?: number; D?: number; k?: number; chunkRows?: number; iters?: number }): {
    ms: number; scoresMs: number; chunkRows: number; flops: number;
  };
}

export type RouterScoring = 'sigmoid' | 'softmax';
/** greedy: plain top-k; group_limited_greedy (deepseek_v2): group score = max in group;
 *  noaux_tc (deepseek_v3/v32): group score = sum of the top 2 of (score + bias) in group. */
export type RouterMethod = 'greedy' | 'group_limited_greedy' | 'noaux_tc';

export interface RouterOptions {
  scoring: RouterScoring;
  method: RouterMethod;
  nGroup: number;
  topkGroup: number;
  /** e_score_correction_bias [E]: added to the scores for selection only (never to the weights). */
  bias: Float32Array | null;
  /** Renormalise the K selected weights to sum to 1 (denominator + 1e-20), as HF does. */
  normTopk: boolean;
  /** routed_scaling_factor, multiplied into the final weights. */
  scale: number;
}

export interface NativeAddon {
  readonly version: string;
  backends(): BackendInfo;
  /** CUDA devices this build can use; never throws. */
  cudaInfo(): CudaInfo;
  /** CUDA op bindings (see CudaOps). */
  readonly cuda: CudaOps;
  /** Sets the CPU pool size (1..256). Default: all hardware threads. */
  setThreads(n: number): void;

  /** Measures sustained read bandwidth in GB/s with every pool thread streaming a private buffer of
   *  `megabytes` (well above the last-level cache). For roofline figures in benchmarks. */
  measureReadBandwidth(megabytes: number): number;

  /** Maps a file read-only (mmap). The returned ArrayBuffer is backed by the mapping, is never copied into
   *  the JS heap, and is unmapped when collected. Throws an Error naming the path on failure. */
  mapFile(path: string): ArrayBuffer;

  /** Zeroed memory of `bytes` for a KV or indexer cache, outside the JS heap: 2 MiB-aligned and advised for
   *  transparent huge pages when it is 2 MiB or more (Linux; GLANCE_HUGE_PAGES=0 turns the advice off), released
   *  when collected. Falls back to an ordinary ArrayBuffer where the mapping fails. */
  allocCacheBuffer(bytes: number): ArrayBuffer;

  /** Registers a weight over `data` (a view into a mapped file; the addon keeps the buffer alive).
   *  data.byteLength must equal rows·cols·sizeof(dtype). For F8_E4M3, scaleInv is weight_scale_inv,
   *  [ceil(rows/128), ceil(cols/128)] fp32, and w[r][c] = e4m3(data[r·cols+c]) · scaleInv[r/128][c/128]. */
  createWeight(data: Uint8Array, dtype: WeightDType, rows: number, cols: number, scaleInv?: Float32Array): NativeWeight;

  /** Whole weight dequantised to fp32 (for small tensors: norms, biases, router weights). */
  toFloat32(w: NativeWeight): Float32Array;

  /** out[T, rows] = x[T, cols] · Wᵀ. */
  matmul(out: Float32Array, x: Float32Array, T: number, w: NativeWeight): void;

  /** out[i, :] = W[ids[i], :] for i < ids.length (out: [ids.length, cols]); ids out of range throw. */
  embedding(out: Float32Array, ids: Int32Array, w: NativeWeight): void;

  /** out[t] = x[t] · rsqrt(mean(x[t]²) + eps) · weight, over rows of `dim` (x: [T, dim]). out may be x. */
  rmsNorm(out: Float32Array, x: Float32Array, T: number, dim: number, weight: Float32Array, eps: number): void;

  /** out[t] = (x[t] − mean) · rsqrt(var + eps) · weight + bias (biased variance), rows of `dim`. out may be x. */
  layerNorm(
    out: Float32Array, x: Float32Array, T: number, dim: number,
    weight: Float32Array, bias: Float32Array, eps: number,
  ): void;

  /** In place. x is [T, nHeads, headStride]; for each head rotates dims [offset, offset + ropeDim) by the angle
   *  positions[t] · invFreq[i] (i < ropeDim/2), with cos and sin multiplied by `attentionFactor` (YaRN mscale).
   *  interleaved = true: pairs (2i, 2i+1) (MLA); false: pairs (i, i + ropeDim/2) (indexer, "NeoX" half split). */
  rope(
    x: Float32Array, T: number, nHeads: number, headStride: number, offset: number, ropeDim: number,
    positions: Int32Array, invFreq: Float32Array, attentionFactor: number, interleaved: boolean,
  ): void;

  /** MLA query absorption. kvB = kv_b_proj.weight [H·(nope+v), kvLora]; W_UK[h] = its rows
   *  [h(nope+v), h(nope+v)+nope). out[t,h,c] = Σ_d q[t,h,d] · W_UK[h][d][c] for c < kvLora, d < nope.
   *  q: [T, H, qStride] (reads the first `nope` of each head); out: [T, H, outStride] (writes the first kvLora). */
  mlaAbsorbQuery(
    out: Float32Array, outStride: number, q: Float32Array, qStride: number,
    T: number, H: number, nope: number, v: number, kvB: NativeWeight,
  ): void;

  /** MLA value expansion. W_UV[h] = kv_b rows [h(nope+v)+nope, (h+1)(nope+v)) : [v, kvLora].
   *  out[t, h·v + j] = Σ_c o[t,h,c] · W_UV[h][j][c]. o: [T, H, kvLora]; out: [T, H·v]. */
  mlaExpandValue(out: Float32Array, o: Float32Array, T: number, H: number, nope: number, v: number, kvB: NativeWeight): void;

  /** MQA attention over latent rows (absorbed MLA). kv: cache [S, kvLora + rope] (c_kv then k_pe), fp32
   *  (Float32Array) or bf16 bit patterns (Uint16Array, each element its exact fp32 widening: half the bytes per row);
   *  q: [T, H, kvLora + rope]; out: [T, H, kvLora]. fp32 arithmetic either way.
   *  p[t,h,s] = softmax_s(scale · q[t,h]·kv[s]); out[t,h] = Σ_s p[t,h,s] · kv[s][0:kvLora].
   *  indices = Int32Array [T, k]: s ranges over indices[t, 0..k) skipping −1 (sparse, DSA);
   *  indices = null: s ranges over [0, positions[t]] (dense causal). Positions/indices ≥ S throw.
   *  kv may also be FP8 latent rows (Uint8Array, quantizeLatentFp8's layout, latentFp8RowBytes apart, starting at an
   *  even byte offset; kvLora % 64 = 0): each row is decoded exactly, then fp32 math as for an fp32 cache on the AVX2 and
   *  scalar bodies, the bf16 cache's contract (bf16 q and probabilities) on the AVX-512-BF16 / AMX ones. */
  mlaAttention(
    out: Float32Array, q: Float32Array, kv: Float32Array | Uint16Array | Uint8Array, S: number,
    T: number, H: number, kvLora: number, rope: number, scale: number,
    indices: Int32Array | null, k: number, positions: Int32Array,
  ): void;

  /** Lightning-indexer scores (fp32 reference). q: [T, Hi, D]; weights: [T, Hi] (every scale folded in);
   *  keys: [S, D]. out[t, s] = Σ_h weights[t,h] · max(0, q[t,h]·keys[s]) for s ≤ positions[t], −Infinity for
   *  s > positions[t] (and for s ≥ S). out: [T, S]. */
  indexerScores(
    out: Float32Array, q: Float32Array, weights: Float32Array, keys: Float32Array,
    T: number, S: number, Hi: number, D: number, positions: Int32Array,
  ): void;

  /** Lightning-indexer scores over the FP8 key cache (DeepGEMM `fp8_mqa_logits` contract). q: [T, Hi, D] e4m3fn
   *  bytes; weights: [T, Hi] fp32 with every query-side scale folded in (q scale, softmax scale D^-0.5, Hi^-0.5);
   *  keys: [S, D] e4m3fn bytes and keyScales: [S] fp32 (the 132-byte-per-token cache at D = 128; both arrays may be
   *  longer, e.g. the cache capacity: only the first S rows are read). out: [T, S]:
   *  out[t, s] = keyScales[s] · Σ_h weights[t,h] · max(0, Σ_d e4m3(q[t,h,d]) · e4m3(keys[s,d])) for s ≤ positions[t],
   *  −Infinity for s > positions[t] (a negative position gives an all −Infinity row). fp32 accumulation (the products
   *  of two e4m3 values are exact in fp32). q and keys must not hold the e4m3 NaN codes 0x7F / 0xFF (quantizeFp8Rows
   *  never writes them for finite input): the fast decode does not keep them NaN, and the scores they touch are
   *  unspecified. */
  indexerScoresFp8(
    out: Float32Array, q: Uint8Array, weights: Float32Array, keys: Uint8Array, keyScales: Float32Array,
    T: number, S: number, Hi: number, D: number, positions: Int32Array,
  ): void;

  /** The indexer's token selection in one op (CudaOps.indexerTopk without its chunking argument): idx [T, k] =
   *  topk(indexerScoresFp8(...)) with indexerScoresFp8's arguments, element for element what those two ops give
   *  (ascending positions, ties to the lower position, −1 padded). A single query (a decode step) scores and selects
   *  with both steps split over the threads and the histogram of the selection built while the scores are computed. */
  indexerTopk(
    idx: Int32Array, q: Uint8Array, weights: Float32Array, keys: Uint8Array, keyScales: Float32Array,
    T: number, S: number, Hi: number, D: number, positions: Int32Array, k: number,
  ): void;

  /** In place: each of the N rows of x [N, D] becomes its orthonormal Walsh–Hadamard transform H_D·x / √D
   *  (DeepSeek's `rotate_activation`, fast_hadamard_transform with scale D^-0.5). Natural (Sylvester) ordering:
   *  H_1 = [1], H_2n = [[H_n, H_n], [H_n, −H_n]], i.e. H_D[i][j] = (−1)^popcount(i & j); it is symmetric and its own
   *  inverse, so applying it twice gives x back (up to rounding). D must be a power of two (1, 2, 4, …), else RangeError.
   *  Computed as log2(D) fp32 butterfly passes then one multiply by fp32(D^-0.5); results do not depend on the SIMD
   *  level or thread count. */
  hadamardRows(x: Float32Array, N: number, D: number): void;

  /** DeepSeek `act_quant` with block = D (one scale per row) and scale_fmt "ue8m0". x: [N, D] fp32; out: [N, D]
   *  e4m3fn bytes; scales: [N] fp32. Per row: amax = max(max_d |x[n,d]|, fp32(1e-4));
   *  scales[n] = 2^ceil(log2(fp32(amax / 448))), an exact power of two; out[n,d] = e4m3fn(x[n,d] / scales[n]) rounded
   *  to nearest, ties to even, saturated to ±448 (e4m3fn: bias 7, 3 mantissa bits, subnormals below 2^-6 in steps of
   *  2^-9, no infinities, 0x7F / 0xFF NaN), sign kept (−0 → 0x80). Dequantised: e4m3(out[n,d]) · scales[n].
   *  A row holding a NaN or ±Infinity has no meaningful scale: scales[n] = NaN and every byte of the row 0x7F. */
  quantizeFp8Rows(out: Uint8Array, scales: Float32Array, x: Float32Array, N: number, D: number): void;

  /** Rows [rowOffset, rowOffset + rows) of an FP8 MLA latent cache (DeepSeek's deployment form, cf. FlashMLA's 656-byte
   *  V32_FP8Sparse rows) from src [rows, kvLora + rope] fp32. Row layout, latentFp8RowBytes(kvLora, rope) bytes:
   *  [kvLora × e4m3fn (c_kv)][rope × bf16 (k_pe)][one int8 exponent e per tile of c_kv][a 0 pad byte to an even count];
   *  tile = 128 columns when kvLora % 128 = 0, else 64 (kvLora % 64 ≠ 0 throws). c_kv[c] = e4m3(byte) · 2^e.
   *  Per tile: e = ceil(log2(amax / 448)) over its finite values, exact (amax 0 → e = 0), clamped to [−117, 119] so that
   *  every decoded value is a normal fp32 and bf16 number (values below 2^−127 flush to 0); bytes = e4m3fn(x / 2^e),
   *  nearest even, saturated to ±448 (±Infinity too), NaN → 0x7F with its sign. k_pe rounded to bf16, nearest even. */
  quantizeLatentFp8(dst: Uint8Array, rowOffset: number, src: Float32Array, rows: number, kvLora: number, rope: number): void;

  /** Exact top-k per row. scores: [T, S]; idx: [T, k]. Row t gets the column indices of its k largest finite
   *  values (−Infinity is never selected); rows with fewer than k finite values are padded with −1.
   *  Ties at the threshold keep the lower column index. Order within a row: ascending column index (the
   *  selected set is what matters; position order lets the attention gather walk the cache forwards). */
  topk(idx: Int32Array, scores: Float32Array, T: number, S: number, k: number): void;

  /** MoE routing. logits: router logits [T, E] (fp32, x·W_gateᵀ); ids/weights: [T, K]. */
  moeRoute(ids: Int32Array, weights: Float32Array, logits: Float32Array, T: number, E: number, K: number, opts: RouterOptions): void;

  /** out[i] = silu(gate[i]) · up[i] for i < n. */
  siluMul(out: Float32Array, gate: Float32Array, up: Float32Array, n: number): void;
}
