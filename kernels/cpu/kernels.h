// The CPU kernels of the native addon: plain functions over raw pointers and sizes, one op per function, with
// the same contracts as sidecar/src/native/contract.ts. They do no argument checking (the N-API layer in
// kernels/binding checks every shape and index before calling them), never throw, and parallelise
// internally over the process-wide thread pool (thread_pool.h). A CUDA version of an op has the same
// signature with device pointers and sits beside it in kernels/cuda.
//
// Conventions: tensors are dense row-major fp32 (int32 for indices); "[A, B]" gives a shape; accumulation is
// fp32; weights (Weight, dtype.h) are dequantised on the fly.
#pragma once

#include <cstdint>

#include "dtype.h"

namespace glance {

// ---- matmul.cc ------------------------------------------------------------------------------------------

// out[T, rows] = x[T, cols] . W^T   (W = w, [rows, cols], nn.Linear layout).
// T <= 8: GEMV, every weight row is streamed once for all T rows of x, rows split across threads.
// T > 8:  blocked GEMM, panels of W dequantised to fp32 once per thread and reused over all of x.
void matmul(float* out, const float* x, int64_t T, const Weight& w);

// Serial building block of matmul over a slice of W's rows and strided x / out:
// out[t*ldo + (r - r0)] = sum_c x[t*ldx + c] * W[r][c]  for t < T, r0 <= r < r1.
void matmul_rows(float* out, int64_t ldo, const float* x, int64_t ldx, int64_t T, const Weight& w, int64_t r0,
                 int64_t r1);

// out[i, :] = W[ids[i], :] for i < n  (out: [n, cols]); every id must be in [0, rows).
void embedding(float* out, const int32_t* ids, int64_t n, const Weight& w);

// out[rows, cols] = W dequantised.
void to_float32(float* out, const Weight& w);

// ---- norm.cc --------------------------------------------------------------------------------------------

// out[t] = x[t] * rsqrt(mean(x[t]^2) + eps) * weight   (x, out: [T, dim]; weight: [dim]; out may equal x).
void rms_norm(float* out, const float* x, int64_t T, int64_t dim, const float* weight, float eps);

// out[t] = (x[t] - mean) * rsqrt(var + eps) * weight + bias, biased variance (out may equal x).
void layer_norm(float* out, const float* x, int64_t T, int64_t dim, const float* weight, const float* bias,
                float eps);

// ---- rope.cc --------------------------------------------------------------------------------------------

// In place on x [T, nHeads, headStride]: for each head rotates dims [offset, offset + ropeDim) by the angle
// theta = fp32(positions[t] * invFreq[i]) (i < ropeDim/2), with cos and sin multiplied by attentionFactor.
// interleaved: pairs (2i, 2i+1); otherwise pairs (i, i + ropeDim/2). For a pair (a, b):
//   a' = a cos - b sin,  b' = a sin + b cos.
void rope(float* x, int64_t T, int64_t nHeads, int64_t headStride, int64_t offset, int64_t ropeDim,
          const int32_t* positions, const float* invFreq, float attentionFactor, bool interleaved);

// ---- mla.cc ---------------------------------------------------------------------------------------------

// MLA query absorption. kvB = kv_b_proj.weight [H*(nope+v), kvLora]; W_UK[h] = rows [h(nope+v), h(nope+v)+nope).
// out[t,h,c] = sum_{d<nope} q[t,h,d] * W_UK[h][d][c]   (c < kvLora).
// q: [T, H, qStride] (first nope of each head read); out: [T, H, outStride] (first kvLora of each head written).
void mla_absorb_query(float* out, int64_t outStride, const float* q, int64_t qStride, int64_t T, int64_t H,
                      int64_t nope, int64_t v, const Weight& kvB);

// MLA value expansion. W_UV[h] = kvB rows [h(nope+v)+nope, (h+1)(nope+v)) : [v, kvLora].
// out[t, h*v + j] = sum_c o[t,h,c] * W_UV[h][j][c].   o: [T, H, kvLora]; out: [T, H*v].
void mla_expand_value(float* out, const float* o, int64_t T, int64_t H, int64_t nope, int64_t v, const Weight& kvB);

// Absorbed-MLA (MQA) attention over the latent cache.
// kv: [S, kvLora + rope] (c_kv | k_pe); q: [T, H, kvLora + rope]; out: [T, H, kvLora].
//   p[t,h,s] = softmax_s(scale * q[t,h] . kv[s]);  out[t,h] = sum_s p[t,h,s] * kv[s][0:kvLora]
// indices != null: [T, k], s ranges over indices[t, 0..k) skipping -1 (sparse, DSA);
// indices == null: s ranges over [0, positions[t]] (dense, causal).
// Every index / position must be in [0, S) (index -1 = skip). A row with no s at all gets out = 0.
// Online softmax in fp32; split-KV with a log-sum-exp combine when there are fewer (t, head-group) pairs than
// threads.
void mla_attention(float* out, const float* q, const float* kv, int64_t S, int64_t T, int64_t H, int64_t kvLora,
                   int64_t rope, float scale, const int32_t* indices, int64_t k, const int32_t* positions);

// mla_attention over a bf16 latent cache: kv [S, kvLora + rope] holds bf16 bit patterns, each element taken as its
// exact fp32 widening; q, out and all arithmetic fp32, otherwise the same contract (the CUDA sparse_mla_attention
// reads a bf16 cache too). Half the bytes per gathered row.
void mla_attention_bf16(float* out, const float* q, const uint16_t* kv, int64_t S, int64_t T, int64_t H,
                        int64_t kvLora, int64_t rope, float scale, const int32_t* indices, int64_t k,
                        const int32_t* positions);

// ---- the FP8 latent cache (quantize.cc: quantize_latent_fp8; mla.cc: mla_attention_fp8) -----------------------
//
// One row per token: [kvLora bytes e4m3fn (c_kv)][rope x bf16 (k_pe)][one int8 exponent e per tile of c_kv][0 or 1 pad
// byte to an even count]. A tile is 128 columns of c_kv when kvLora % 128 == 0, else 64 (kvLora % 64 != 0 has no FP8
// form; the binding refuses it). c_kv[c] = e4m3(byte[c]) * 2^e[c / tile]. The scales are powers of two (FlashMLA's
// "V32_FP8Sparse" rounds them so too, stored there as fp32): with e in [-117, 119] every decoded value is an exact
// normal fp32 *and* bf16 number (or zero or NaN), so the bf16 attention bodies read these rows without any new rounding.
// kvLora 512 + rope 64: 512 + 128 + 4 = 644 bytes per token (FlashMLA: 656, its scales being fp32).
constexpr int64_t kLatentFp8MinExp = -117;  // e4m3's smallest subnormal 2^-9 times 2^-117 = 2^-126, the smallest normal
constexpr int64_t kLatentFp8MaxExp = 119;   // 448 * 2^119 < 2^128: still finite

inline int64_t clamp_latent_fp8_exponent(int64_t e) {
  return e < kLatentFp8MinExp ? kLatentFp8MinExp : e > kLatentFp8MaxExp ? kLatentFp8MaxExp : e;
}
inline int64_t latent_fp8_tile(int64_t kvLora) { return kvLora % 128 == 0 ? 128 : 64; }
inline int64_t latent_fp8_row_bytes(int64_t kvLora, int64_t rope) {
  const int64_t n = kvLora + 2 * rope + kvLora / latent_fp8_tile(kvLora);
  return n + (n & 1);
}

// Writes rows [rowOffset, rowOffset + rows) of an FP8 latent cache from src [rows, kvLora + rope] fp32. Per tile:
// e = ceil(log2(amax / 448)) over the tile's finite values, computed exactly (frexp; amax = 0 gives e = 0), clamped to
// [kLatentFp8MinExp, kLatentFp8MaxExp]; byte = e4m3fn(x / 2^e), round to nearest even, saturated to +-448 (infinities
// too), NaN -> the NaN code 0x7F with the sign, -0 -> 0x80. Values below 2^-127 thus flush to zero (what AMX does to a
// bf16 subnormal anyway). k_pe is rounded to bf16 (nearest even; NaN stays a quiet NaN) as the bf16 cache rounds it.
// kvLora % 64 == 0. dst: at least (rowOffset + rows) * latent_fp8_row_bytes(kvLora, rope) bytes.
void quantize_latent_fp8(uint8_t* dst, int64_t rowOffset, const float* src, int64_t rows, int64_t kvLora, int64_t rope);

// mla_attention over an FP8 latent cache (rows as above, latent_fp8_row_bytes apart): each gathered row is decoded
// exactly, into fp32 for the AVX2 and scalar bodies (then bit-identical to mla_attention on the dequantised rows) or into
// bf16 for the AVX-512-BF16 and AMX bodies (mla_attention_bf16's contract on those rows). An exponent byte outside
// [kLatentFp8MinExp, kLatentFp8MaxExp] is read as the nearest bound. kvLora % 64 == 0.
void mla_attention_fp8(float* out, const float* q, const uint8_t* kv, int64_t S, int64_t T, int64_t H, int64_t kvLora,
                       int64_t rope, float scale, const int32_t* indices, int64_t k, const int32_t* positions);

// ---- indexer.cc -----------------------------------------------------------------------------------------

// Lightning-indexer scores. q: [T, Hi, D]; weights: [T, Hi]; keys: [S, D]; out: [T, S].
// out[t,s] = sum_h weights[t,h] * max(0, q[t,h] . keys[s])  for s <= positions[t],  -inf for s > positions[t].
void indexer_scores(float* out, const float* q, const float* weights, const float* keys, int64_t T, int64_t S,
                    int64_t Hi, int64_t D, const int32_t* positions);

// ---- indexer_fp8.cc -------------------------------------------------------------------------------------

// Lightning-indexer scores over the FP8 key cache (DeepGEMM fp8_mqa_logits). q: [T, Hi, D] e4m3; weights: [T, Hi]
// (every query-side scale folded in); keys: [S, D] e4m3; key_scales: [S]; out: [T, S].
// out[t,s] = key_scales[s] * sum_h weights[t,h] * max(0, sum_d e4m3(q[t,h,d]) * e4m3(keys[s,d])) for
// s <= positions[t], -inf after. fp32 accumulation. q and keys must hold no e4m3 NaN code (0x7F / 0xFF): the AVX2
// decode does not keep them NaN, so the scores they touch are unspecified.
void indexer_scores_fp8(float* out, const uint8_t* q, const float* weights, const uint8_t* keys,
                        const float* key_scales, int64_t T, int64_t S, int64_t Hi, int64_t D,
                        const int32_t* positions);

// ---- indexer_topk.cc ------------------------------------------------------------------------------------

// The indexer's token selection (the CUDA indexer_topk): idx[T, k] = topk(indexer_scores_fp8(...)) with the
// arguments of indexer_scores_fp8, element for element the result of those two ops (ascending positions, -1 padded).
// One query (decode) scores and selects with both steps split over the threads; the scores are never materialised
// for the caller.
void indexer_topk(int32_t* idx, const uint8_t* q, const float* weights, const uint8_t* keys, const float* key_scales,
                  int64_t T, int64_t S, int64_t Hi, int64_t D, const int32_t* positions, int64_t k);

// ---- hadamard.cc ----------------------------------------------------------------------------------------

// In place on x [N, D], D a power of two: every row becomes its orthonormal Walsh-Hadamard transform
// H_D x / sqrt(D) in natural (Sylvester) order, H_1 = [1], H_2n = [[H_n, H_n], [H_n, -H_n]]
// (DeepSeek's rotate_activation). log2(D) butterfly passes h = 1, 2, ..., D/2, then a multiply by
// fp32(D^-0.5); the AVX2 and scalar bodies give bit-identical results.
void hadamard_rows(float* x, int64_t N, int64_t D);

// ---- quantize.cc ----------------------------------------------------------------------------------------

// DeepSeek act_quant, one block per row, scale_fmt "ue8m0". x: [N, D]; out: [N, D] e4m3fn bytes; scales: [N].
// amax = max(max_d |x[n,d]|, fp32(1e-4)); scales[n] = 2^ceil(log2(fp32(amax / 448))) (exact power of two);
// out[n,d] = e4m3fn(x[n,d] / scales[n]), round to nearest even, saturated to +-448, sign kept (-0 -> 0x80).
// A row with a NaN or an infinity gets scales[n] = NaN and every byte 0x7F (the NaN code).
void quantize_fp8_rows(uint8_t* out, float* scales, const float* x, int64_t N, int64_t D);

// ---- topk.cc --------------------------------------------------------------------------------------------

// Exact top-k per row. scores: [T, S]; idx: [T, k]. Row t gets the indices of its k largest finite values in
// descending order of value, ties broken by lower index (also at the selection threshold); non-finite values
// (-inf, +inf, NaN) are never selected; rows with fewer than k finite values are padded with -1.
// -0 and +0 compare equal. O(S) radix select per row, then a sort of the k selected; rows in parallel.
void topk(int32_t* idx, const float* scores, int64_t T, int64_t S, int64_t k);

// ---- moe.cc ---------------------------------------------------------------------------------------------

enum class RouterScoring { Sigmoid, Softmax };
enum class RouterMethod { Greedy, GroupLimitedGreedy, NoAuxTc };

struct RouterParams {
  RouterScoring scoring = RouterScoring::Sigmoid;
  RouterMethod method = RouterMethod::Greedy;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  const float* bias = nullptr;  // [E] or null
  bool norm_topk = false;
  float scale = 1.0f;
};

// MoE routing. logits: [T, E]; ids, weights: [T, K]. See moe.cc for the exact HF semantics.
void moe_route(int32_t* ids, float* weights, const float* logits, int64_t T, int64_t E, int64_t K,
               const RouterParams& p);

// ---- elementwise.cc -------------------------------------------------------------------------------------

// out[i] = silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i]   for i < n (out may alias).
void silu_mul(float* out, const float* gate, const float* up, int64_t n);

// ---- bandwidth.cc ---------------------------------------------------------------------------------------

// Sustained read bandwidth in GB/s (1e9 B/s): every pool thread sums a private buffer of bytes_per_thread,
// all at once, several times; the best repetition counts.
double measure_read_bandwidth(int64_t bytes_per_thread);

}  // namespace glance
