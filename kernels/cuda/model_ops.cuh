// Device-pointer API of the model ops (everything of the forward pass except 3a's attention kernels):
// GEMV/GEMM for fp32/bf16/fp16/DeepSeek-FP8 weights, norms, RoPE, embeddings, MoE routing and expert
// permutation, SiLU-mul, the FP8 indexer-key quantiser, generic (any-shape) indexer scores, exact top-k and
// latent MQA attention, and sampling.
//
// Every function enqueues on `stream` and never synchronises, never allocates: the model runner captures a
// whole decode step as one CUDA graph. Scalars that change per step (positions, token ids, expert ids) are read
// from device memory for that reason. Each op has the same contract as its CPU twin in kernels/cpu (documented in
// sidecar/src/native/contract.ts); test/gpu checks them against it. Activations are fp32; weights stay in their
// checkpoint dtype on the device and are dequantised in registers (FP8: e4m3 · weight_scale_inv per 128×128 block).
//
// cuBLAS is not part of this toolkit (and not loaded at run time): the GEMMs here are our own — a warp-per-row
// GEMV for decode (bandwidth-bound) and an mma.sync bf16 tensor-core GEMM for prefill (activations rounded to
// bf16, weights dequantised to bf16 in shared memory, fp32 accumulation).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace glance {
namespace cuda {

// Same numbering as glance::DType (kernels/cpu/dtype.h).
enum WDType : int { kF32 = 0, kBF16 = 1, kF16 = 2, kF8E4M3 = 3 };

// A weight [rows, cols] row-major in device memory. FP8: scale_inv [ceil(rows/128), scale_cols] fp32.
struct DevWeight {
  const uint8_t* data = nullptr;
  const float* scale_inv = nullptr;
  int dtype = kF32;
  int rows = 0;
  int cols = 0;
  int scale_cols = 0;
};

// ---- matrix products ---------------------------------------------------------------------------------------
// Tensor-core operand precision of the GEMM: bf16 (≈4e-3 relative per product) or split bf16 (hi + lo, fp32-grade).
enum class GemmPrecision : int { kBf16 = 0, kSplitBf16 = 1 };

// out[m, r] (+)= Σ_c x[m, c] · W[r, c] for m < M, r < W.rows (x: M rows of stride ldx; out: stride ldo).
// M ≤ 8 uses the GEMV (fp32 math), larger M the tensor-core GEMM.
void linear(cudaStream_t s, float* out, int ldo, const float* x, int ldx, int M, const DevWeight& w, bool accumulate,
            GemmPrecision prec = GemmPrecision::kSplitBf16);
// Force one path (tests compare both against the CPU).
void gemv(cudaStream_t s, float* out, int ldo, const float* x, int ldx, int M, const DevWeight& w, bool accumulate);
void gemm(cudaStream_t s, float* out, int ldo, const float* x, int ldx, int M, const DevWeight& w, bool accumulate,
          GemmPrecision prec = GemmPrecision::kSplitBf16);

// Grouped (MoE) products. `shape` is any expert of the group (all share dtype and shape); table: [E] DevWeight on the
// device.
// GEMV form (decode): out[i, r] = Σ_c x[i / x_div, c] · table[ids[i]][r, c] for i < M slots.
void grouped_gemv(cudaStream_t s, float* out, int ldo, const float* x, int ldx, int x_div, int M,
                  const DevWeight* table, const int* ids, const DevWeight& shape);
// SwiGLU GEMVs: out[m, r] = silu(x·gate[r]) · (x·up[r]) in one pass over both weights (dense / shared-expert MLP),
// and the grouped form over expert tables (gate_table[ids[i]], up_table[ids[i]]; all experts share `shape`).
void gemv_swiglu(cudaStream_t s, float* out, int ldo, const float* x, int ldx, int M, const DevWeight& gate, const DevWeight& up);
void grouped_gemv_swiglu(cudaStream_t s, float* out, int ldo, const float* x, int ldx, int x_div, int M,
                         const DevWeight* gate_table, const DevWeight* up_table, const int* ids, const DevWeight& shape);
// ---- decode GEMV batches (gemv.cu) ----------------------------------------------------------------------------
// MoE router options (the CPU's RouterOptions): scoring 0 sigmoid / 1 softmax; method 0 greedy,
// 1 group_limited_greedy, 2 noaux_tc.
struct RouteSpec {
  const float* logits = nullptr;  // [T, E] router logits on the device (null: no routing)
  const float* bias = nullptr;    // [E] e_score_correction_bias or null
  int E = 0, K = 0, scoring = 0, method = 0, n_group = 1, topk_group = 1;
  bool norm_topk = true;
  float scale = 1.0f;
};

// One product of a batch. Plain: out[m, r] (+)= Σ_c x̂[m, c] · w[r, c] for m < M. SwiGLU (up.data non-null):
// out[m, r] = silu(x̂[m]·w[r]) · (x̂[m]·up[r]). Grouped (table non-null): slots i < `slots`, weight table[ids[i]]
// (and up_table[ids[i]] for SwiGLU), activation row i / x_div, out row i. x̂ = x, or its RMSNorm when the batch has
// norm_w.
struct GemvJob {
  DevWeight w, up;
  const DevWeight* table = nullptr;
  const DevWeight* up_table = nullptr;
  const int* ids = nullptr;
  int slots = 0, x_div = 1;
  float* out = nullptr;
  int ldo = 0;
  bool accumulate = false;
  bool vec = false;                // set by gemv_batch
  int* route_ids_out = nullptr;    // routed grouped job: the chosen experts [K] …
  float* route_w_out = nullptr;    // … and their weights [K], for moe_down_combine
};
constexpr int kGemvBatchJobs = 4;
constexpr int kGemvMaxM = 8;
// Up to kGemvBatchJobs products over the same activation rows x [M, ldx] in one launch (meant for M ≤ 8: each weight
// row is read once per 4 activation rows). norm_w non-null:
// x̂[m, c] = x[m, c] · rsqrt(Σ_c x[m, c]² / norm_dim + eps) · norm_w[c] (the CPU's rms_norm, folded: the scale is
// applied to the dot product). route.logits non-null (one token): the grouped jobs route the token themselves
// (the router above, from the logits) instead of reading ids, and write ids / weights to route_ids_out / route_w_out.
// All jobs share the input width.
struct GemvBatch {
  const float* x = nullptr;
  int ldx = 0, M = 1;
  const float* norm_w = nullptr;
  int norm_dim = 0;
  float eps = 1e-6f;
  RouteSpec route;
  int njobs = 0;
  GemvJob jobs[kGemvBatchJobs];
  int block_start[kGemvBatchJobs + 1] = {};  // set by gemv_batch
};
void gemv_batch(cudaStream_t s, GemvBatch batch);

// MoE down projection + combine of T tokens (decode): out[t, r] += Σ_{j<K} wts[t·K+j] · (g[t·K+j] · table[ids[t·K+j]][r])
// + (shared_down.data ? gs[t] · shared_down[r] : 0). g: [T·K, ldg] expert activations, gs: [T, ldgs].
struct MoeDownParams {
  float* out = nullptr;
  int ldo = 0;
  const float* g = nullptr;
  int ldg = 0;
  const int* ids = nullptr;
  const float* wts = nullptr;
  const DevWeight* table = nullptr;
  DevWeight shape;  // any expert's down projection
  int K = 0;
  const float* gs = nullptr;
  int ldgs = 0;
  DevWeight shared_down;
  bool vec = false, vec_shared = false;  // set by moe_down_combine
};
void moe_down_combine(cudaStream_t s, MoeDownParams p, int T);

// GEMM form (prefill): tiles[j] = {expert, m0, m1} for j < *num_tiles (device), rows m of x are x[x_rows[m]] (x_rows
// null: m); out[m, r] = Σ_c x[..] · table[expert of m's tile][r, c]. max_tiles bounds the grid.
void grouped_gemm(cudaStream_t s, float* out, int ldo, const float* x, int ldx, const int* x_rows,
                  const DevWeight* table, const int4* tiles, const int* num_tiles, int max_tiles, const DevWeight& shape,
                  GemmPrecision prec = GemmPrecision::kSplitBf16);
// Rows per GEMM tile (the MoE tile list is built in multiples of it).
constexpr int kGemmTileM = 64;

// ---- elementwise and norms ---------------------------------------------------------------------------------
// out[t, :dim] = x[t, :dim] · rsqrt(mean(x²) + eps) · weight (rows of stride ld_x / ld_out; in place allowed).
void rms_norm(cudaStream_t s, float* out, int ld_out, const float* x, int ld_x, int T, int dim, const float* weight, float eps);
void layer_norm(cudaStream_t s, float* out, int ld_out, const float* x, int ld_x, int T, int dim, const float* weight,
                const float* bias, float eps);
// In place on x [T, nHeads, headStride], dims [offset, offset + ropeDim) of every head; positions[t] on the device.
void rope(cudaStream_t s, float* x, int T, int nHeads, int headStride, int offset, int ropeDim, const int* positions,
          const float* invFreq, float attentionFactor, bool interleaved);
// out[i, :] = W[ids[i], :] (ids on the device, checked by the caller).
void embedding(cudaStream_t s, float* out, const int* ids, int n, const DevWeight& w);
void silu_mul(cudaStream_t s, float* out, const float* gate, const float* up, int64_t n);
// a[i] += b[i]
void add_inplace(cudaStream_t s, float* a, const float* b, int64_t n);
// dst[positions[t] · width + c] = src[t · width + c] (rows into a cache at device-held positions).
void scatter_rows(cudaStream_t s, float* dst, const float* src, int T, int width, const int* positions);
// Copies [T, width] rows from src (stride lds) to dst (stride ldd).
void copy_rows(cudaStream_t s, float* dst, int ldd, const float* src, int lds, int T, int width);
// Multiplies x[i] by a * (mul ? mul[i] : 1).
void scale_inplace(cudaStream_t s, float* x, int64_t n, float a, const float* mul);

// ---- MLA pieces -------------------------------------------------------------------------------------------
// kvB = kv_b_proj [H(nope+v), kvLora]. out[t,h,c] (stride outStride per head) = Σ_d q[t,h,d] W_UK[h][d][c].
void mla_absorb_query(cudaStream_t s, float* out, int outStride, const float* q, int qStride, int T, int H, int nope,
                      int v, const DevWeight& kvB);
// The same, and writes the absorbed query's rope part out[t,h, kvLora + i] = q[t,h, nope + i] for i < rope, rotated
// by the interleaved RoPE at positions[t] (the rope op's arithmetic) when inv_freq is non-null; out16 non-null: the
// rows again in bf16 (the tuned sparse MLA's operand), so decode needs neither a rope nor a to_bf16 launch.
void mla_absorb_query_rope(cudaStream_t s, float* out, int outStride, const float* q, int qStride, int T, int H, int nope,
                           int v, int rope, const DevWeight& kvB, const int* positions = nullptr,
                           const float* inv_freq = nullptr, float af = 1.0f, uint16_t* out16 = nullptr);
// out[t, h·v + j] = Σ_c o[t,h,c] · W_UV[h][j][c].
void mla_expand_value(cudaStream_t s, float* out, const float* o, int T, int H, int kvLora, int nope, int v,
                      const DevWeight& kvB);
// out[i] = bf16(in[i]) (round to nearest even), for kernels that take bf16 operands.
void to_bf16(cudaStream_t s, uint16_t* out, const float* in, int64_t n);
// Writes fp32 latent rows [T, latent] into the bf16 cache at rows positions[t].
void store_latent_rows(cudaStream_t s, uint16_t* cache, const float* rows, int T, int latent, const int* positions);
// MQA attention over bf16 latent rows (cache [*, kvLora + rope]); q [T, H, kvLora + rope]; out [T, H, kvLora].
// indices [T, k] (−1 skipped) or null for dense causal (s ≤ positions[t]). Any shape.
void mla_attention_generic(cudaStream_t s, float* out, const float* q, const uint16_t* cache, int T, int H, int kvLora, int rope,
                   float scale, const int* indices, int k, const int* positions);
// The same over an fp32 latent cache (exact CPU parity; twice the bytes).
void mla_attention_generic(cudaStream_t s, float* out, const float* q, const float* cache, int T, int H, int kvLora, int rope,
                   float scale, const int* indices, int k, const int* positions);

// ---- fused decode chains ---------------------------------------------------------------------------------
// Latent row finalisation: rows [T, L + R]: RMSNorm of [0, L) (weight, eps), interleaved RoPE of [L, L+R) at
// positions[t], in place, and the row stored to the cache at positions[t] (bf16 or fp32).
void kv_finalize(cudaStream_t s, uint16_t* cache, float* rows, int T, int L, int R, const float* w, float eps,
                 const int* positions, const float* inv_freq, float af);
void kv_finalize(cudaStream_t s, float* cache, float* rows, int T, int L, int R, const float* w, float eps,
                 const int* positions, const float* inv_freq, float af);
// Indexer rows x [N, D] (token t = n / rows_per_token): LayerNorm (ln_w null: none), half-split RoPE on [0, R),
// Hadamard, e4m3 + power-of-two scale into out8/scales at row rows_at[t] (null: n); wts non-null: wts[n] *= fold·scale.
void indexer_rows(cudaStream_t s, uint8_t* out8, float* scales, const float* x, int N, int D, int rows_per_token,
                  const float* ln_w, const float* ln_b, float ln_eps, int R, const int* positions, const float* inv_freq,
                  float af, const int* rows_at, float* wts, float fold);

// The same three chains and the query absorption as argument records, and one launch that runs them all for a
// decode step (blocks by range: kv_finalize rows, indexer key rows, indexer query rows, absorption; a part with no
// rows — T, N or absorb.T of 0 — is skipped). Needs indexer D ≤ 256 (decode_row_ops_fit).
struct KvFinalizeArgs {
  void* cache = nullptr;
  bool cache_f32 = false;
  float* rows = nullptr;
  int T = 0, L = 0, R = 0;
  const float* w = nullptr;
  float eps = 1e-6f;
  const int* positions = nullptr;
  const float* inv_freq = nullptr;
  float af = 1.0f;
};
struct IndexerRowsArgs {
  uint8_t* out8 = nullptr;
  float* scales = nullptr;
  const float* x = nullptr;
  int N = 0, D = 0, rows_per_token = 1;
  const float* ln_w = nullptr;
  const float* ln_b = nullptr;
  float ln_eps = 0.0f;
  int R = 0;
  const int* positions = nullptr;
  const float* inv_freq = nullptr;
  float af = 1.0f;
  const int* rows_at = nullptr;
  float* wts = nullptr;
  float fold = 0.0f;
};
struct AbsorbArgs {
  float* out = nullptr;
  uint16_t* out16 = nullptr;
  int outStride = 0;
  const float* q = nullptr;
  int qStride = 0, T = 0, H = 0, nope = 0, v = 0, rope = 0;
  DevWeight w;
  const int* positions = nullptr;
  const float* inv_freq = nullptr;
  float af = 1.0f;
};
KvFinalizeArgs kv_finalize_args(void* cache, bool cache_f32, float* rows, int T, int L, int R, const float* w, float eps,
                                const int* positions, const float* inv_freq, float af);
IndexerRowsArgs indexer_rows_args(uint8_t* out8, float* scales, const float* x, int N, int D, int rows_per_token,
                                  const float* ln_w, const float* ln_b, float ln_eps, int R, const int* positions,
                                  const float* inv_freq, float af, const int* rows_at, float* wts, float fold);
AbsorbArgs absorb_args(float* out, uint16_t* out16, int outStride, const float* q, int qStride, int T, int H, int nope,
                       int v, int rope, const DevWeight& kvB, const int* positions, const float* inv_freq, float af);
bool decode_row_ops_fit(int index_dim);
void decode_row_ops(cudaStream_t s, const KvFinalizeArgs& kv, const IndexerRowsArgs& keys, const IndexerRowsArgs& queries,
                    const AbsorbArgs& absorb);

// ---- lightning indexer ------------------------------------------------------------------------------------
// Per row of x [N, D] (D a power of two ≤ 1024): Hadamard (scale D^-0.5), then e4m3 with a power-of-two scale
// (DeepSeek act_quant, ue8m0) -- kernels/cpu/{hadamard,quantize}.cc. Rows go to out8 + rows_at[n]·D (rows_at null:
// n) and scales likewise. hadamard=false skips the rotation.
void hadamard_quant_rows(cudaStream_t s, uint8_t* out8, float* scales, const float* x, int N, int D, const int* rows_at,
                         bool hadamard);
// In-place Hadamard of rows (fp32 indexer path keeps none; exposed for tests).
void hadamard_rows_generic(cudaStream_t s, float* x, int N, int D);
// Scores over fp32 keys [*, D] or e4m3 keys [*, D] + scales (the 132-byte layout at D = 128): out [T, ldo],
// out[t, s] for s < S: Σ_h w[t,h] relu(q[t,h]·k[s]) (· keyScale[s]) for s ≤ positions[t], else −inf.
void indexer_scores_f32_generic(cudaStream_t s, float* out, int ldo, const float* q, const float* w, const float* keys, int T,
                        int S, int Hi, int D, const int* positions);
void indexer_scores_fp8_generic(cudaStream_t s, float* out, int ldo, const uint8_t* q8, const float* w, const uint8_t* keys,
                        const float* key_scales, int T, int S, int Hi, int D, const int* positions);
// Exact top-k per row (CPU contract: largest finite values, ties → lower column, ascending column order, −1 pad).
// scores [T, ld] (first S columns used); idx [T, k]. S may be a device value (S_dev non-null: the row length is
// *S_dev, S is then the bound of the row stride), so a graph can replay with a growing context.
void topk_generic(cudaStream_t s, int* idx, const float* scores, int ld, int T, int S, int k, const int* S_dev);

// ---- MoE -------------------------------------------------------------------------------------------------
// Router with the CPU semantics (kernels/cpu/moe.cc). scoring 0 sigmoid / 1 softmax; method 0 greedy,
// 1 group_limited_greedy, 2 noaux_tc.
void moe_route(cudaStream_t s, int* ids, float* weights, const float* logits, int T, int E, int K, int scoring,
               int method, int nGroup, int topkGroup, const float* bias, bool normTopk, float scale);
// Token → expert permutation of the T·K slots: slot_rows[p] = token of the p-th permuted slot, slot_pos[t·K+j] = p,
// tiles = {expert, m0, m1} in kGemmTileM steps, *num_tiles. counts: scratch [E + 1]. Returns the tile bound.
int moe_permute(cudaStream_t s, const int* ids, int T, int K, int E, int* counts, int* slot_rows, int* slot_pos,
                int4* tiles, int* num_tiles);
// out[t] (+)= Σ_j weights[t,j] · y[slot_pos[t·K+j]] (slot_pos null: slot t·K+j).
void moe_combine(cudaStream_t s, float* out, const float* y, const float* weights, const int* slot_pos, int T, int K,
                 int D, bool accumulate);

// ---- sampling --------------------------------------------------------------------------------------------
// token[0] = argmax (lowest index on ties) when temperature ≤ 0, else a sample of softmax(logits / temperature)
// drawn with the uniform *u in [0, 1) (device memory, so a graph replays with new draws).
void sample(cudaStream_t s, int* token, const float* logits, int V, float temperature, const float* u);

// Throws std::runtime_error naming `what` when the last launch or call failed.
void check(cudaError_t e, const char* what);

}  // namespace cuda
}  // namespace glance
