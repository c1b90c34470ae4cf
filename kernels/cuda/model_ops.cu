// The model ops of model_ops.cuh other than the matrix products (gemm.cu). Each mirrors its CPU twin in
// kernels/cpu (same formula, fp32 arithmetic); reductions run in a fixed order so that results do not depend on
// timing (decode-by-graph equals step-by-step bit for bit).
//
// The attention-side ops here (indexer scores, top-k, latent MQA attention) are generic: any head count and
// latent width, so every checkpoint shape runs (the golden fixtures, the embedded model). The tuned kernels for
// DeepSeek's shapes are 3a's (indexer.cu, topk.cu, sparse_mla.cu); the runner picks those where they apply.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <cfloat>
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "model_ops.cuh"
#include "moe_route.cuh"
#include "weights.cuh"

namespace glance {
namespace cuda {

namespace {

// Block-wide sum in a fixed order (warp shuffles, then warp 0 over the warp sums); every thread gets the result.
template <int NT>
__device__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = lane < NT / 32 ? red[lane] : 0.0f;
  t = warp_sum(t);
  return t;
}

inline int blocks_for(int64_t n, int per) { return static_cast<int>((n + per - 1) / per); }

__device__ __forceinline__ void store_cache(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_cache(uint16_t* p, float v) {
  const __nv_bfloat16 b = __float2bfloat16_rn(v);
  *p = *reinterpret_cast<const uint16_t*>(&b);
}

// ---- norms -------------------------------------------------------------------------------------------------
constexpr int kNormThreads = 256;

__global__ void rms_norm_kernel(float* out, int ld_out, const float* x, int ld_x, int dim, const float* w, float eps) {
  pdl_wait();
  pdl_launch_dependents();
  __shared__ float red[32];
  const float* xr = x + static_cast<size_t>(blockIdx.x) * ld_x;
  float* orow = out + static_cast<size_t>(blockIdx.x) * ld_out;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += kNormThreads) ss += xr[i] * xr[i];
  ss = block_sum<kNormThreads>(ss, red);
  const float r = rsqrtf(ss / dim + eps);
  for (int i = threadIdx.x; i < dim; i += kNormThreads) orow[i] = xr[i] * r * w[i];
}

__global__ void layer_norm_kernel(float* out, int ld_out, const float* x, int ld_x, int dim, const float* w,
                                  const float* b, float eps) {
  pdl_wait();
  pdl_launch_dependents();
  __shared__ float red[32];
  const float* xr = x + static_cast<size_t>(blockIdx.x) * ld_x;
  float* orow = out + static_cast<size_t>(blockIdx.x) * ld_out;
  float s = 0.0f;
  for (int i = threadIdx.x; i < dim; i += kNormThreads) s += xr[i];
  const float mean = block_sum<kNormThreads>(s, red) / dim;
  float v = 0.0f;
  for (int i = threadIdx.x; i < dim; i += kNormThreads) {
    const float d = xr[i] - mean;
    v += d * d;
  }
  const float var = block_sum<kNormThreads>(v, red) / dim;
  const float r = rsqrtf(var + eps);
  for (int i = threadIdx.x; i < dim; i += kNormThreads) orow[i] = (xr[i] - mean) * r * w[i] + b[i];
}

// ---- rope --------------------------------------------------------------------------------------------------
// One thread per (t, head, pair). The angle is the fp32 product pos·invFreq; cos/sin in double as the CPU does.
__global__ void rope_kernel(float* x, int T, int nHeads, int headStride, int offset, int half, const int* positions,
                            const float* invFreq, float af, bool interleaved) {
  pdl_wait();
  pdl_launch_dependents();
  const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= static_cast<int64_t>(T) * nHeads * half) return;
  const int i = static_cast<int>(id % half);
  const int64_t th = id / half;
  const int t = static_cast<int>(th / nHeads);
  const float theta = static_cast<float>(positions[t]) * invFreq[i];
  double sd, cd;
  sincos(static_cast<double>(theta), &sd, &cd);
  const float c = static_cast<float>(cd) * af, s = static_cast<float>(sd) * af;
  float* v = x + th * headStride + offset;
  const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
  const float a = v[ia], b = v[ib];
  v[ia] = a * c - b * s;
  v[ib] = a * s + b * c;
}

// ---- elementwise -------------------------------------------------------------------------------------------
__global__ void embedding_kernel(float* out, const int* ids, int n, DevWeight w) {
  pdl_wait();
  pdl_launch_dependents();
  const int row = blockIdx.y;
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= n || c >= w.cols) return;
  out[static_cast<size_t>(row) * w.cols + c] = wload(w, ids[row], c);
}

__global__ void silu_mul_kernel(float* out, const float* g, const float* u, int64_t n) {
  pdl_wait();
  pdl_launch_dependents();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float a = g[i];
  out[i] = a / (1.0f + expf(-a)) * u[i];
}

__global__ void add_kernel(float* a, const float* b, int64_t n) {
  pdl_wait();
  pdl_launch_dependents();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) a[i] += b[i];
}

__global__ void copy_rows_kernel(float* dst, int ldd, const float* src, int lds, int width) {
  pdl_wait();
  pdl_launch_dependents();
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c < width) dst[static_cast<size_t>(blockIdx.y) * ldd + c] = src[static_cast<size_t>(blockIdx.y) * lds + c];
}

__global__ void scatter_rows_kernel(float* dst, const float* src, int width, const int* positions) {
  pdl_wait();
  pdl_launch_dependents();
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c < width) dst[static_cast<size_t>(positions[blockIdx.y]) * width + c] = src[static_cast<size_t>(blockIdx.y) * width + c];
}

__global__ void scale_kernel(float* x, int64_t n, float a, const float* mul) {
  pdl_wait();
  pdl_launch_dependents();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= mul ? a * mul[i] : a;
}

// ---- MLA pieces --------------------------------------------------------------------------------------------
__device__ __forceinline__ void rope_cos_sin(int pos, float inv, float af, float& c, float& s) {
  const float theta = static_cast<float>(pos) * inv;
  double sd, cd;
  sincos(static_cast<double>(theta), &sd, &cd);
  c = static_cast<float>(cd) * af;
  s = static_cast<float>(sd) * af;
}

// out[t,h,c] = Σ_d q[t,h,d] W[h(nope+v)+d][c]. A block per (t·h, 64 columns): 4 groups of 64 threads split the d
// range (each thread a strided quarter, consecutive threads reading consecutive columns), then the 4 partial sums are
// added in a fixed order. (A thread per column over all d left decode with a dozen blocks and a 64-long serial loop.)
// rope > 0: block x = 0 also writes the rope part out[t,h, cols + i] = q[t,h, nope + i], rotated by the interleaved
// RoPE at positions[t] when inv_freq is non-null (the rope op's arithmetic). out16 non-null: a bf16 copy of the row.
constexpr int kAbsorbCols = 64, kAbsorbGroups = 4;

__device__ __forceinline__ void store_absorbed(float* out, uint16_t* out16, size_t i, float v) {
  out[i] = v;
  if (out16) {
    const __nv_bfloat16 b = __float2bfloat16_rn(v);
    out16[i] = *reinterpret_cast<const uint16_t*>(&b);
  }
}

__device__ __forceinline__ void absorb_block(const AbsorbArgs& a, int bx, int th) {
  __shared__ float part[kAbsorbGroups][kAbsorbCols];
  const DevWeight& w = a.w;
  const int nope = a.nope, v = a.v, H = a.H;
  const int lane_c = threadIdx.x % kAbsorbCols, grp = threadIdx.x / kAbsorbCols;
  const int c = bx * kAbsorbCols + lane_c;
  const int h = th % H;
  const float* qh = a.q + static_cast<size_t>(th) * a.qStride;
  float acc = 0.0f;
  if (c < w.cols)
    for (int d = grp; d < nope; d += kAbsorbGroups) acc += qh[d] * wload(w, h * (nope + v) + d, c);
  part[grp][lane_c] = acc;
  const int i = threadIdx.x;
  if (bx == 0 && i < a.rope) {
    float val = qh[nope + i];
    if (a.inv_freq) {
      float cs, sn;
      rope_cos_sin(a.positions[th / H], a.inv_freq[i / 2], a.af, cs, sn);
      const float x0 = qh[nope + (i & ~1)], x1 = qh[nope + (i | 1)];
      val = (i & 1) == 0 ? x0 * cs - x1 * sn : x0 * sn + x1 * cs;
    }
    store_absorbed(a.out, a.out16, static_cast<size_t>(th) * a.outStride + w.cols + i, val);
  }
  __syncthreads();
  if (grp == 0 && c < w.cols) {
    float sum = part[0][lane_c];
#pragma unroll
    for (int g = 1; g < kAbsorbGroups; g++) sum += part[g][lane_c];
    store_absorbed(a.out, a.out16, static_cast<size_t>(th) * a.outStride + c, sum);
  }
}

__global__ void __launch_bounds__(kAbsorbCols * kAbsorbGroups) absorb_kernel(const AbsorbArgs a) {
  pdl_wait();
  pdl_launch_dependents();
  absorb_block(a, blockIdx.x, blockIdx.y);
}

// out[t, h·v + j] = Σ_c o[t,h,c] W[h(nope+v)+nope+j][c]: a warp per (t,h,j), lanes over c.
__global__ void expand_kernel(float* out, const float* o, int T, int H, int L, int nope, int v, DevWeight w) {
  pdl_wait();
  pdl_launch_dependents();
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
  if (warp >= T * H * v) return;
  const int j = warp % v, th = warp / v, h = th % H;
  const float* orow = o + static_cast<size_t>(th) * L;
  const int r = h * (nope + v) + nope + j;
  float acc = 0.0f;
  for (int c = lane; c < L; c += 32) acc += orow[c] * wload(w, r, c);
  acc = warp_sum(acc);
  if (lane == 0) out[static_cast<size_t>(th) * v + j] = acc;
}

__global__ void to_bf16_kernel(uint16_t* out, const float* in, int64_t n) {
  pdl_wait();
  pdl_launch_dependents();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const __nv_bfloat16 b = __float2bfloat16_rn(in[i]);
  out[i] = *reinterpret_cast<const uint16_t*>(&b);
}

__global__ void store_latent_kernel(uint16_t* cache, const float* rows, int latent, const int* positions) {
  pdl_wait();
  pdl_launch_dependents();
  const int t = blockIdx.y;
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= latent) return;
  const __nv_bfloat16 b = __float2bfloat16_rn(rows[static_cast<size_t>(t) * latent + c]);
  cache[static_cast<size_t>(positions[t]) * latent + c] = *reinterpret_cast<const uint16_t*>(&b);
}

// Latent MQA attention, one block per (t, h); each warp runs an online softmax over its share of the candidates
// (lane j holds latent dims j, j+32, ...), then the warps merge in a fixed order.
constexpr int kAttnWarps = 4;
constexpr int kAttnMaxPerLane = 24;  // latent ≤ 768

__device__ __forceinline__ float cache_value(const uint16_t* row, int c) { return bf16_bits_to_float(row[c]); }
__device__ __forceinline__ float cache_value(const float* row, int c) { return row[c]; }

template <int kAttnMaxPerLane, class CacheT>
__global__ void __launch_bounds__(kAttnWarps * 32) mla_attention_kernel(float* out, const float* q,
                                                                         const CacheT* cache, int H, int L, int R,
                                                                         float scale, const int* indices, int k,
                                                                         const int* positions) {
  pdl_wait();
  pdl_launch_dependents();
  const int th = blockIdx.x, t = th / H;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int latent = L + R;
  const float* qr = q + static_cast<size_t>(th) * latent;
  float qv[kAttnMaxPerLane], acc[kAttnMaxPerLane];
#pragma unroll
  for (int i = 0; i < kAttnMaxPerLane; i++) {
    const int c = lane + 32 * i;
    qv[i] = c < latent ? qr[c] : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int n = indices ? k : positions[t] + 1;
  for (int j = warp; j < n; j += kAttnWarps) {
    const int s = indices ? indices[static_cast<size_t>(t) * k + j] : j;
    if (s < 0) continue;
    const CacheT* row = cache + static_cast<size_t>(s) * latent;
    float kv[kAttnMaxPerLane];
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kAttnMaxPerLane; i++) {
      const int c = lane + 32 * i;
      kv[i] = c < latent ? cache_value(row, c) : 0.0f;
      dot += qv[i] * kv[i];
    }
    const float sc = warp_sum(dot) * scale;
    const float mn = fmaxf(m, sc);
    const float corr = expf(m - mn), p = expf(sc - mn);
    l = l * corr + p;
#pragma unroll
    for (int i = 0; i < kAttnMaxPerLane; i++) acc[i] = acc[i] * corr + p * (lane + 32 * i < L ? kv[i] : 0.0f);
    m = mn;
  }
  __shared__ float sm_m[kAttnWarps], sm_l[kAttnWarps];
  __shared__ float sm_acc[kAttnWarps][kAttnMaxPerLane * 32];
  if (lane == 0) {
    sm_m[warp] = m;
    sm_l[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kAttnMaxPerLane; i++) sm_acc[warp][lane + 32 * i] = acc[i];
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < kAttnWarps; w++) M = fmaxf(M, sm_m[w]);
  float den = 0.0f;
  for (int w = 0; w < kAttnWarps; w++) den += sm_m[w] == -INFINITY ? 0.0f : sm_l[w] * expf(sm_m[w] - M);
  float* orow = out + static_cast<size_t>(th) * L;
  for (int c = threadIdx.x; c < L; c += kAttnWarps * 32) {
    float num = 0.0f;
    for (int w = 0; w < kAttnWarps; w++)
      if (sm_m[w] != -INFINITY) num += sm_acc[w][c] * expf(sm_m[w] - M);
    orow[c] = den > 0.0f ? num / den : 0.0f;
  }
}

// ---- fused per-token chains (decode launches fewer kernels) -------------------------------------------------

// One block (kNormThreads) per token: RMSNorm of row[0:L) (weight w, eps), interleaved RoPE on row[L:L+R), then the
// row goes to the latent cache at positions[t] (bf16 or fp32). The row in `rows` is updated in place too.
template <class CacheT>
__device__ __forceinline__ void kv_finalize_row(const KvFinalizeArgs& a, int t) {
  __shared__ float red[32];
  const int L = a.L, R = a.R, latent = L + R;
  float* row = a.rows + static_cast<size_t>(t) * latent;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < L; i += kNormThreads) ss += row[i] * row[i];
  ss = block_sum<kNormThreads>(ss, red);
  const float r = rsqrtf(ss / L + a.eps);
  const int pos = a.positions[t];
  CacheT* dst = static_cast<CacheT*>(a.cache) + static_cast<size_t>(pos) * latent;
  for (int i = threadIdx.x; i < L; i += kNormThreads) {
    const float v = row[i] * r * a.w[i];
    row[i] = v;
    store_cache(dst + i, v);
  }
  for (int i = threadIdx.x; i < R / 2; i += kNormThreads) {
    float c, sn;
    rope_cos_sin(pos, a.inv_freq[i], a.af, c, sn);
    const float x0 = row[L + 2 * i], x1 = row[L + 2 * i + 1];
    const float r0 = x0 * c - x1 * sn, r1 = x0 * sn + x1 * c;
    row[L + 2 * i] = r0;
    row[L + 2 * i + 1] = r1;
    store_cache(dst + 2 * i + L, r0);
    store_cache(dst + 2 * i + 1 + L, r1);
  }
}

template <class CacheT>
__global__ void __launch_bounds__(kNormThreads) kv_finalize_kernel(const KvFinalizeArgs a) {
  pdl_wait();
  pdl_launch_dependents();
  kv_finalize_row<CacheT>(a, blockIdx.x);
}

// Indexer rows, one block of max(D, 32) threads per row n (token t = n / rows_per_token): optional LayerNorm (ln_w,
// ln_b), half-split RoPE on [0, R) at positions[t], Hadamard, e4m3 with a power-of-two scale into out8 / scales at
// row rows_at[t] (rows_at null: n); optional head weights w[n] *= fold · scale.
// Unnormalised Walsh-Hadamard transform of the row sh[0..D) (D a power of two) in shared memory, thread i owning
// element i; every thread of the block calls it (it syncs), the last sync leaves sh readable by all.
__device__ __forceinline__ void block_hadamard(float* sh, int D) {
  const int i = threadIdx.x;
  const bool live = i < D;
  for (int h = 1; h < D; h <<= 1) {
    float a = 0.0f;
    if (live) a = (i & h) == 0 ? sh[i] + sh[i + h] : sh[i - h] - sh[i];
    __syncthreads();
    if (live) sh[i] = a;
    __syncthreads();
  }
}

__device__ __forceinline__ void indexer_row(const IndexerRowsArgs& a, int n) {
  uint8_t* out8 = a.out8;
  float* scales = a.scales;
  const float *x = a.x, *ln_w = a.ln_w, *ln_b = a.ln_b, *inv_freq = a.inv_freq;
  const int D = a.D, R = a.R;
  const int* positions = a.positions;
  const int* rows_at = a.rows_at;
  float* wts = a.wts;
  const float ln_eps = a.ln_eps, af = a.af, fold = a.fold;
  extern __shared__ float sh[];
  __shared__ float red[32];
  __shared__ float stat[2];
  __shared__ int bad_sh;
  const int i = threadIdx.x, t = n / a.rows_per_token;
  const bool live = i < D;
  float v = live ? x[static_cast<size_t>(n) * D + i] : 0.0f;
  if (i == 0) bad_sh = 0;
  if (ln_w) {
    // LayerNorm: mean, then biased variance; warp sums then the warps in order (thread 0)
    float a = warp_sum(v);
    if ((i & 31) == 0) red[i >> 5] = a;
    __syncthreads();
    if (i == 0) {
      float m = 0.0f;
      for (int w = 0; w < (blockDim.x >> 5); w++) m += red[w];
      stat[0] = m / D;
    }
    __syncthreads();
    const float d = live ? v - stat[0] : 0.0f;
    a = warp_sum(d * d);
    __syncthreads();
    if ((i & 31) == 0) red[i >> 5] = a;
    __syncthreads();
    if (i == 0) {
      float q = 0.0f;
      for (int w = 0; w < (blockDim.x >> 5); w++) q += red[w];
      stat[1] = rsqrtf(q / D + ln_eps);
    }
    __syncthreads();
    if (live) v = (v - stat[0]) * stat[1] * ln_w[i] + ln_b[i];
  }
  if (live) sh[i] = v;
  __syncthreads();
  if (R > 0) {
    const int half = R / 2;
    float nv = v;
    if (i < R) {
      const int j = i < half ? i : i - half;
      float c, sn;
      rope_cos_sin(positions[t], inv_freq[j], af, c, sn);
      nv = i < half ? sh[i] * c - sh[i + half] * sn : sh[i - half] * sn + sh[i] * c;
    }
    __syncthreads();
    if (live) sh[i] = nv;
    __syncthreads();
  }
  block_hadamard(sh, D);
  v = live ? sh[i] * static_cast<float>(1.0 / sqrt(static_cast<double>(D))) : 0.0f;
  if (!isfinite(v)) atomicOr(&bad_sh, 1);
  const float am = warp_max(fabsf(v));
  __syncthreads();
  if ((i & 31) == 0) red[i >> 5] = am;
  __syncthreads();
  float amax = 1e-4f;
  for (int w = 0; w < (blockDim.x >> 5); w++) amax = fmaxf(amax, red[w]);
  if (!live) return;
  const int row = rows_at ? rows_at[t] : n;
  uint8_t* o = out8 + static_cast<size_t>(row) * D;
  if (bad_sh) {
    o[i] = 0x7F;
    if (i == 0) scales[row] = NAN;
    return;
  }
  const float sc = e4m3_pow2_scale(amax);
  o[i] = float_to_e4m3(v * (1.0f / sc));
  if (i == 0) {
    scales[row] = sc;
    if (wts) wts[n] *= fold * sc;
  }
}

__global__ void indexer_rows_kernel(const IndexerRowsArgs a) {
  pdl_wait();
  pdl_launch_dependents();
  indexer_row(a, blockIdx.x);
}

// The decode step's row work after the projections in one launch of 256-thread blocks, by block range: kv_finalize
// rows, indexer key rows, indexer query rows, absorption blocks (each body as in its own kernel above).
__global__ void __launch_bounds__(kNormThreads) decode_row_ops_kernel(const KvFinalizeArgs kv, const IndexerRowsArgs keys,
                                                                     const IndexerRowsArgs queries, const AbsorbArgs ab) {
  pdl_wait();
  pdl_launch_dependents();
  int b = blockIdx.x;
  if (b < kv.T) {
    if (kv.cache_f32) kv_finalize_row<float>(kv, b);
    else kv_finalize_row<uint16_t>(kv, b);
    return;
  }
  b -= kv.T;
  if (b < keys.N) {
    indexer_row(keys, b);
    return;
  }
  b -= keys.N;
  if (b < queries.N) {
    indexer_row(queries, b);
    return;
  }
  b -= queries.N;
  const int cb = (ab.w.cols + kAbsorbCols - 1) / kAbsorbCols;
  absorb_block(ab, b % cb, b / cb);
}

// ---- indexer -----------------------------------------------------------------------------------------------
// One block of max(D, 32) threads per row (D ≤ 1024, a power of two). Butterflies in shared memory, the same
// additions in the same order as the CPU, then one multiply by fp32(D^-0.5).
__global__ void hadamard_quant_kernel(uint8_t* out8, float* scales, float* xio, const float* x, int D, const int* rows_at,
                                      bool hadamard, bool quant) {
  pdl_wait();
  pdl_launch_dependents();
  extern __shared__ float sh[];
  __shared__ float red[32];
  __shared__ int bad_sh;
  const int n = blockIdx.x, i = threadIdx.x;
  const bool live = i < D;
  if (live) sh[i] = x[static_cast<size_t>(n) * D + i];
  if (i == 0) bad_sh = 0;
  __syncthreads();
  if (hadamard) {
    block_hadamard(sh, D);
    if (live) sh[i] *= static_cast<float>(1.0 / sqrt(static_cast<double>(D)));
  }
  const float v = live ? sh[i] : 0.0f;
  if (!quant) {
    if (live) xio[static_cast<size_t>(n) * D + i] = v;
    return;
  }
  // amax over the row; a NaN or infinity anywhere gives a NaN scale and NaN codes, as on the CPU.
  if (!isfinite(v)) atomicOr(&bad_sh, 1);
  const float a = warp_max(fabsf(v));
  if ((i & 31) == 0) red[i >> 5] = a;
  __syncthreads();
  float amax = 1e-4f;
  for (int w = 0; w < (blockDim.x >> 5); w++) amax = fmaxf(amax, red[w]);
  if (!live) return;
  const int row = rows_at ? rows_at[n] : n;
  uint8_t* o = out8 + static_cast<size_t>(row) * D;
  if (bad_sh) {
    o[i] = 0x7F;
    if (i == 0) scales[row] = NAN;
    return;
  }
  const float sc = e4m3_pow2_scale(amax);
  o[i] = float_to_e4m3(v * (1.0f / sc));
  if (i == 0) scales[row] = sc;
}

// Scores: a block per (t, 128 keys); q and w of token t in shared memory; a thread per key.
constexpr int kIdxKeys = 128;

template <bool FP8, int HMAX>
__global__ void indexer_scores_kernel(float* out, int ldo, const void* qv, const float* w, const void* keys,
                                      const float* key_scales, int S, int Hi, int D, const int* positions, bool vec16) {
  pdl_wait();
  pdl_launch_dependents();
  extern __shared__ float sq[];  // Hi·D query values (decoded) + Hi weights
  const int t = blockIdx.y;
  const int HD = Hi * D;
  for (int i = threadIdx.x; i < HD; i += blockDim.x) {
    const size_t gi = static_cast<size_t>(t) * HD + i;
    sq[i] = FP8 ? e4m3_to_float(reinterpret_cast<const uint8_t*>(qv)[gi]) : reinterpret_cast<const float*>(qv)[gi];
  }
  for (int i = threadIdx.x; i < Hi; i += blockDim.x) sq[HD + i] = w[static_cast<size_t>(t) * Hi + i];
  __syncthreads();
  const int s = blockIdx.x * kIdxKeys + threadIdx.x;
  if (s >= S) return;
  const int pos = positions[t];
  float* o = out + static_cast<size_t>(t) * ldo + s;
  if (s > pos) {
    *o = -INFINITY;
    return;
  }
  // Each key element is decoded once and used by every head (HMAX ≥ Hi dot products in registers).
  float dot[HMAX];
#pragma unroll
  for (int h = 0; h < HMAX; h++) dot[h] = 0.0f;
  if (FP8 && vec16) {
    // 16 key bytes per load (the key rows are D bytes apart, D % 16 == 0, the cache 16-byte aligned); the same
    // products in the same order as the byte loop below
    const uint4* row = reinterpret_cast<const uint4*>(reinterpret_cast<const uint8_t*>(keys) + static_cast<size_t>(s) * D);
    for (int d0 = 0; d0 < D; d0 += 16) {
      const uint4 u = __ldg(row + d0 / 16);
      const uint32_t wv[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
      for (int b = 0; b < 16; b++) {
        const float kvv = e4m3_to_float(static_cast<uint8_t>(wv[b >> 2] >> (8 * (b & 3))));
#pragma unroll
        for (int h = 0; h < HMAX; h++)
          if (h < Hi) dot[h] += sq[h * D + d0 + b] * kvv;
      }
    }
  } else {
    for (int d = 0; d < D; d++) {
      const size_t ki = static_cast<size_t>(s) * D + d;
      const float kvv = FP8 ? e4m3_to_float(reinterpret_cast<const uint8_t*>(keys)[ki]) : reinterpret_cast<const float*>(keys)[ki];
#pragma unroll
      for (int h = 0; h < HMAX; h++)
        if (h < Hi) dot[h] += sq[h * D + d] * kvv;
    }
  }
  float total = 0.0f;
#pragma unroll
  for (int h = 0; h < HMAX; h++)
    if (h < Hi) total += sq[HD + h] * fmaxf(dot[h], 0.0f);
  *o = FP8 ? total * key_scales[s] : total;
}

template <bool FP8>
void launch_indexer(cudaStream_t s, float* out, int ldo, const void* q, const float* w, const void* keys,
                    const float* key_scales, int T, int S, int Hi, int D, const int* positions) {
  const size_t sm = (static_cast<size_t>(Hi) * D + Hi) * sizeof(float);
  if (sm > 48 * 1024) throw std::runtime_error("indexer scores: Hi·D above 12K values");
  const dim3 grid(blocks_for(S, kIdxKeys), T);
  const bool vec16 = FP8 && D % 16 == 0 && (reinterpret_cast<uintptr_t>(keys) & 15u) == 0;
  if (Hi <= 4) launch_kernel("indexer_scores_kernel", indexer_scores_kernel<FP8, 4>, dim3(grid), dim3(kIdxKeys), sm, s, out, ldo, q, w, keys, key_scales, S, Hi, D, positions, vec16);
  else if (Hi <= 8) launch_kernel("indexer_scores_kernel", indexer_scores_kernel<FP8, 8>, dim3(grid), dim3(kIdxKeys), sm, s, out, ldo, q, w, keys, key_scales, S, Hi, D, positions, vec16);
  else if (Hi <= 16) launch_kernel("indexer_scores_kernel", indexer_scores_kernel<FP8, 16>, dim3(grid), dim3(kIdxKeys), sm, s, out, ldo, q, w, keys, key_scales, S, Hi, D, positions, vec16);
  else if (Hi <= 32) launch_kernel("indexer_scores_kernel", indexer_scores_kernel<FP8, 32>, dim3(grid), dim3(kIdxKeys), sm, s, out, ldo, q, w, keys, key_scales, S, Hi, D, positions, vec16);
  else if (Hi <= 64) launch_kernel("indexer_scores_kernel", indexer_scores_kernel<FP8, 64>, dim3(grid), dim3(kIdxKeys), sm, s, out, ldo, q, w, keys, key_scales, S, Hi, D, positions, vec16);
  else throw std::runtime_error("indexer scores: more than 64 indexer heads");
}

// ---- top-k -------------------------------------------------------------------------------------------------
constexpr int kTopkThreads = 512;


// One block per row: the threshold key by a 4×8-bit radix select (histograms in shared memory), then one ordered
// pass with a block scan that emits keys above the threshold and the lowest-indexed ties, in column order.
__global__ void __launch_bounds__(kTopkThreads) topk_kernel(int* idx, const float* scores, int ld, int S_static, int k,
                                                            const int* S_dev) {
  pdl_wait();
  pdl_launch_dependents();
  using Scan = cub::BlockScan<int, kTopkThreads>;
  using Reduce = cub::BlockReduce<int, kTopkThreads>;
  __shared__ union {
    typename Scan::TempStorage scan;
    typename Reduce::TempStorage reduce;
  } tmp;
  __shared__ int hist[256];
  __shared__ uint32_t prefix_sh;
  __shared__ int need_sh, finite_sh, carry_sh, tie_carry_sh;
  const int S = S_dev ? *S_dev : S_static;
  const float* row = scores + static_cast<size_t>(blockIdx.x) * ld;
  int* o = idx + static_cast<size_t>(blockIdx.x) * k;
  if (threadIdx.x == 0) {
    finite_sh = 0;
    prefix_sh = 0;
    need_sh = k;
  }
  __syncthreads();
  int fin = 0;
  for (int s = threadIdx.x; s < S; s += kTopkThreads) fin += topk_score_key(row[s]) != 0;
  fin = Reduce(tmp.reduce).Sum(fin);
  if (threadIdx.x == 0) finite_sh = fin;
  __syncthreads();
  const bool take_all = finite_sh <= k;
  uint32_t thr = 1;  // select keys ≥ thr ... refined below
  int ties_needed = 0;
  if (!take_all) {
    // Radix select: after level L, prefix holds the top 8(L+1) bits of the k-th largest key.
    for (int level = 0; level < 4; level++) {
      const int shift = 24 - 8 * level;
      for (int i = threadIdx.x; i < 256; i += kTopkThreads) hist[i] = 0;
      __syncthreads();
      const uint32_t prefix = prefix_sh;
      const uint32_t mask = level == 0 ? 0u : (0xFFFFFFFFu << (shift + 8));
      for (int s = threadIdx.x; s < S; s += kTopkThreads) {
        const uint32_t key = topk_score_key(row[s]);
        if (key != 0 && (key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1);
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        int need = need_sh, b = 255;
        for (; b > 0; b--) {
          if (hist[b] >= need) break;
          need -= hist[b];
        }
        need_sh = need;
        prefix_sh = prefix | (static_cast<uint32_t>(b) << shift);
      }
      __syncthreads();
    }
    thr = prefix_sh;        // the k-th largest key
    ties_needed = need_sh;  // how many keys equal to thr to take (lowest columns first)
  }
  if (threadIdx.x == 0) {
    carry_sh = 0;
    tie_carry_sh = 0;
  }
  __syncthreads();
  for (int base = 0; base < S; base += kTopkThreads) {
    const int s = base + threadIdx.x;
    const uint32_t key = s < S ? topk_score_key(row[s]) : 0u;
    const int is_tie = (!take_all && key == thr && key != 0) ? 1 : 0;
    int tie_before, tie_total;
    Scan(tmp.scan).ExclusiveSum(is_tie, tie_before, tie_total);
    __syncthreads();
    const bool sel = key != 0 && (take_all || key > thr || (is_tie && tie_carry_sh + tie_before < ties_needed));
    int sel_before, sel_total;
    Scan(tmp.scan).ExclusiveSum(sel ? 1 : 0, sel_before, sel_total);
    if (sel) o[carry_sh + sel_before] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
      carry_sh += sel_total;
      tie_carry_sh += tie_total;
    }
    __syncthreads();
  }
  for (int i = carry_sh + threadIdx.x; i < k; i += kTopkThreads) o[i] = -1;
}

// ---- MoE ---------------------------------------------------------------------------------------------------
// A warp per token (moe_route.cuh: the CPU router's selection, each pick a warp reduction).
__global__ void moe_route_kernel(int* ids, float* weights, const RouteSpec r) {
  pdl_wait();
  pdl_launch_dependents();
  __shared__ RouteScratch sh;
  const int t = blockIdx.x;
  route_token_warp(r, t, sh, ids + static_cast<size_t>(t) * r.K, weights + static_cast<size_t>(t) * r.K);
}

// One block: counts per expert, offsets, slot positions in (token, j) order within each expert (deterministic),
// and the tile list.
__global__ void moe_permute_kernel(const int* ids, int T, int K, int E, int* counts, int* slot_rows, int* slot_pos,
                                   int4* tiles, int* num_tiles) {
  pdl_wait();
  pdl_launch_dependents();
  // counts[e] then running offsets; serial over slots in thread 0 keeps the order deterministic. T·K is at most a
  // prefill chunk times K (a few thousand), cheap next to the expert GEMMs.
  if (threadIdx.x != 0) return;
  for (int e = 0; e <= E; e++) counts[e] = 0;
  const int n = T * K;
  for (int i = 0; i < n; i++) counts[ids[i] + 1]++;
  for (int e = 0; e < E; e++) counts[e + 1] += counts[e];  // counts[e] = first permuted row of expert e
  int nt = 0;
  for (int e = 0; e < E; e++)
    for (int m = counts[e]; m < counts[e + 1]; m += kGemmTileM) tiles[nt++] = make_int4(e, m, min(m + kGemmTileM, counts[e + 1]), 0);
  *num_tiles = nt;
  // Fill: reuse counts as cursors.
  for (int i = 0; i < n; i++) {
    const int e = ids[i];
    const int p = counts[e]++;
    slot_rows[p] = i / K;
    slot_pos[i] = p;
  }
}

__global__ void moe_combine_kernel(float* out, const float* y, const float* w, const int* slot_pos, int K, int D,
                                   bool accumulate) {
  pdl_wait();
  pdl_launch_dependents();
  const int t = blockIdx.y;
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= D) return;
  float acc = accumulate ? out[static_cast<size_t>(t) * D + d] : 0.0f;
  for (int j = 0; j < K; j++) {
    const int slot = t * K + j;
    const int p = slot_pos ? slot_pos[slot] : slot;
    acc += w[slot] * y[static_cast<size_t>(p) * D + d];
  }
  out[static_cast<size_t>(t) * D + d] = acc;
}

// ---- sampling ----------------------------------------------------------------------------------------------
constexpr int kSampleThreads = 1024;

__global__ void __launch_bounds__(kSampleThreads) sample_kernel(int* token, const float* logits, int V, float temp,
                                                                const float* u) {
  pdl_wait();
  pdl_launch_dependents();
  using Reduce = cub::BlockReduce<float, kSampleThreads>;
  using Scan = cub::BlockScan<float, kSampleThreads>;
  __shared__ union {
    typename Reduce::TempStorage r;
    typename Scan::TempStorage s;
  } tmp;
  __shared__ float bv[32];
  __shared__ int bi[32];
  __shared__ float m_sh, sum_sh, carry_sh;
  __shared__ int found_sh;
  // Argmax, lowest index on ties.
  float best = -INFINITY;
  int besti = 0x7fffffff;
  for (int i = threadIdx.x; i < V; i += kSampleThreads) {
    const float v = logits[i];
    if (v > best || (v == best && i < besti)) {
      best = v;
      besti = i;
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, besti, o);
    if (ov > best || (ov == best && oi < besti)) {
      best = ov;
      besti = oi;
    }
  }
  if ((threadIdx.x & 31) == 0) {
    bv[threadIdx.x >> 5] = best;
    bi[threadIdx.x >> 5] = besti;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float b = bv[0];
    int i0 = bi[0];
    for (int w = 1; w < kSampleThreads / 32; w++)
      if (bv[w] > b || (bv[w] == b && bi[w] < i0)) {
        b = bv[w];
        i0 = bi[w];
      }
    m_sh = b;
    *token = i0 == 0x7fffffff ? 0 : i0;
  }
  if (temp <= 0.0f) return;
  __syncthreads();
  const float m = m_sh, inv = 1.0f / temp;
  float part = 0.0f;
  for (int i = threadIdx.x; i < V; i += kSampleThreads) part += expf((logits[i] - m) * inv);
  const float total = Reduce(tmp.r).Sum(part);
  if (threadIdx.x == 0) {
    sum_sh = total;
    carry_sh = 0.0f;
    found_sh = 0x7fffffff;
  }
  __syncthreads();
  const float target = *u * sum_sh;
  for (int base = 0; base < V; base += kSampleThreads) {
    const int i = base + threadIdx.x;
    const float p = i < V ? expf((logits[i] - m) * inv) : 0.0f;
    float before, chunk;
    Scan(tmp.s).ExclusiveSum(p, before, chunk);
    const float c0 = carry_sh;
    if (i < V && p > 0.0f && c0 + before + p > target) atomicMin(&found_sh, i);
    __syncthreads();
    if (threadIdx.x == 0) carry_sh = c0 + chunk;
    __syncthreads();
    if (found_sh != 0x7fffffff) break;
  }
  // Rounding can leave the target just past the last cumulative sum: keep the argmax then.
  if (threadIdx.x == 0 && found_sh != 0x7fffffff) *token = found_sh;
}

}  // namespace

// ---- host wrappers -----------------------------------------------------------------------------------------
void rms_norm(cudaStream_t s, float* out, int ld_out, const float* x, int ld_x, int T, int dim, const float* weight, float eps) {
  if (T <= 0) return;
  launch_kernel("rms_norm_kernel", rms_norm_kernel, dim3(T), dim3(kNormThreads), 0, s, out, ld_out, x, ld_x, dim, weight, eps);
  check(cudaGetLastError(), "rms_norm");
}

void layer_norm(cudaStream_t s, float* out, int ld_out, const float* x, int ld_x, int T, int dim, const float* weight,
                const float* bias, float eps) {
  if (T <= 0) return;
  launch_kernel("layer_norm_kernel", layer_norm_kernel, dim3(T), dim3(kNormThreads), 0, s, out, ld_out, x, ld_x, dim, weight, bias, eps);
  check(cudaGetLastError(), "layer_norm");
}

void rope(cudaStream_t s, float* x, int T, int nHeads, int headStride, int offset, int ropeDim, const int* positions,
          const float* invFreq, float attentionFactor, bool interleaved) {
  const int half = ropeDim / 2;
  const int64_t n = static_cast<int64_t>(T) * nHeads * half;
  if (n <= 0) return;
  launch_kernel("rope_kernel", rope_kernel, dim3(blocks_for(n, 256)), dim3(256), 0, s, x, T, nHeads, headStride, offset, half, positions, invFreq,
                                                  attentionFactor, interleaved);
  check(cudaGetLastError(), "rope");
}

void embedding(cudaStream_t s, float* out, const int* ids, int n, const DevWeight& w) {
  if (n <= 0) return;
  launch_kernel("embedding_kernel", embedding_kernel, dim3(dim3(blocks_for(w.cols, 256), n)), dim3(256), 0, s, out, ids, n, w);
  check(cudaGetLastError(), "embedding");
}

void silu_mul(cudaStream_t s, float* out, const float* gate, const float* up, int64_t n) {
  if (n <= 0) return;
  launch_kernel("silu_mul_kernel", silu_mul_kernel, dim3(blocks_for(n, 256)), dim3(256), 0, s, out, gate, up, n);
  check(cudaGetLastError(), "silu_mul");
}

void add_inplace(cudaStream_t s, float* a, const float* b, int64_t n) {
  if (n <= 0) return;
  launch_kernel("add_kernel", add_kernel, dim3(blocks_for(n, 256)), dim3(256), 0, s, a, b, n);
  check(cudaGetLastError(), "add_inplace");
}

void copy_rows(cudaStream_t s, float* dst, int ldd, const float* src, int lds, int T, int width) {
  if (T <= 0 || width <= 0) return;
  launch_kernel("copy_rows_kernel", copy_rows_kernel, dim3(dim3(blocks_for(width, 256), T)), dim3(256), 0, s, dst, ldd, src, lds, width);
  check(cudaGetLastError(), "copy_rows");
}

void scatter_rows(cudaStream_t s, float* dst, const float* src, int T, int width, const int* positions) {
  if (T <= 0 || width <= 0) return;
  launch_kernel("scatter_rows_kernel", scatter_rows_kernel, dim3(dim3(blocks_for(width, 256), T)), dim3(256), 0, s, dst, src, width, positions);
  check(cudaGetLastError(), "scatter_rows");
}

void scale_inplace(cudaStream_t s, float* x, int64_t n, float a, const float* mul) {
  if (n <= 0) return;
  launch_kernel("scale_kernel", scale_kernel, dim3(blocks_for(n, 256)), dim3(256), 0, s, x, n, a, mul);
  check(cudaGetLastError(), "scale_inplace");
}

AbsorbArgs absorb_args(float* out, uint16_t* out16, int outStride, const float* q, int qStride, int T, int H, int nope,
                       int v, int rope, const DevWeight& kvB, const int* positions, const float* inv_freq, float af) {
  if (rope > kAbsorbCols * kAbsorbGroups || kvB.cols + rope > outStride) throw std::invalid_argument("mla_absorb_query_rope: rope part does not fit");
  if (inv_freq && (rope % 2 != 0 || !positions)) throw std::invalid_argument("mla_absorb_query_rope: RoPE needs an even rope width and positions");
  AbsorbArgs a;
  a.out = out;
  a.out16 = out16;
  a.outStride = outStride;
  a.q = q;
  a.qStride = qStride;
  a.T = T;
  a.H = H;
  a.nope = nope;
  a.v = v;
  a.rope = rope;
  a.w = kvB;
  a.positions = positions;
  a.inv_freq = inv_freq;
  a.af = af;
  return a;
}

void mla_absorb_query(cudaStream_t s, float* out, int outStride, const float* q, int qStride, int T, int H, int nope,
                      int v, const DevWeight& kvB) {
  mla_absorb_query_rope(s, out, outStride, q, qStride, T, H, nope, v, 0, kvB);
}

void mla_absorb_query_rope(cudaStream_t s, float* out, int outStride, const float* q, int qStride, int T, int H, int nope,
                           int v, int rope, const DevWeight& kvB, const int* positions, const float* inv_freq, float af,
                           uint16_t* out16) {
  if (T <= 0) return;
  const AbsorbArgs a = absorb_args(out, out16, outStride, q, qStride, T, H, nope, v, rope, kvB, positions, inv_freq, af);
  launch_kernel("absorb_kernel", absorb_kernel, dim3(blocks_for(kvB.cols, kAbsorbCols), T * H), dim3(kAbsorbCols * kAbsorbGroups),
                0, s, a);
}

void mla_expand_value(cudaStream_t s, float* out, const float* o, int T, int H, int kvLora, int nope, int v,
                      const DevWeight& kvB) {
  const int64_t warps = static_cast<int64_t>(T) * H * v;
  if (warps <= 0) return;
  launch_kernel("expand_kernel", expand_kernel, dim3(blocks_for(warps * 32, 256)), dim3(256), 0, s, out, o, T, H, kvLora, nope, v, kvB);
  check(cudaGetLastError(), "mla_expand_value");
}

void to_bf16(cudaStream_t s, uint16_t* out, const float* in, int64_t n) {
  if (n <= 0) return;
  launch_kernel("to_bf16_kernel", to_bf16_kernel, dim3(blocks_for(n, 256)), dim3(256), 0, s, out, in, n);
  check(cudaGetLastError(), "to_bf16");
}

void store_latent_rows(cudaStream_t s, uint16_t* cache, const float* rows, int T, int latent, const int* positions) {
  if (T <= 0) return;
  launch_kernel("store_latent_kernel", store_latent_kernel, dim3(dim3(blocks_for(latent, 256), T)), dim3(256), 0, s, cache, rows, latent, positions);
  check(cudaGetLastError(), "store_latent_rows");
}

template <class CacheT>
void launch_attention(cudaStream_t s, float* out, const float* q, const CacheT* cache, int T, int H, int kvLora, int rope,
                      float scale, const int* indices, int k, const int* positions) {
  if (T <= 0) return;
  const int latent = kvLora + rope;
  if (latent > kAttnMaxPerLane * 32) throw std::runtime_error("mla_attention: latent width above 768");
  if (latent <= 256)
    launch_kernel("mla_attention_kernel", mla_attention_kernel<8, CacheT>, dim3(T * H), dim3(kAttnWarps * 32), 0, s, out, q, cache, H, kvLora, rope, scale, indices, k, positions);
  else if (latent <= 576)
    launch_kernel("mla_attention_kernel", mla_attention_kernel<18, CacheT>, dim3(T * H), dim3(kAttnWarps * 32), 0, s, out, q, cache, H, kvLora, rope, scale, indices, k, positions);
  else
    launch_kernel("mla_attention_kernel", mla_attention_kernel<24, CacheT>, dim3(T * H), dim3(kAttnWarps * 32), 0, s, out, q, cache, H, kvLora, rope, scale, indices, k, positions);
  check(cudaGetLastError(), "mla_attention");
}

void mla_attention_generic(cudaStream_t s, float* out, const float* q, const uint16_t* cache, int T, int H, int kvLora,
                           int rope, float scale, const int* indices, int k, const int* positions) {
  launch_attention(s, out, q, cache, T, H, kvLora, rope, scale, indices, k, positions);
}

void mla_attention_generic(cudaStream_t s, float* out, const float* q, const float* cache, int T, int H, int kvLora,
                           int rope, float scale, const int* indices, int k, const int* positions) {
  launch_attention(s, out, q, cache, T, H, kvLora, rope, scale, indices, k, positions);
}

KvFinalizeArgs kv_finalize_args(void* cache, bool f32, float* rows, int T, int L, int R, const float* w, float eps,
                                const int* positions, const float* inv_freq, float af) {
  KvFinalizeArgs a;
  a.cache = cache;
  a.cache_f32 = f32;
  a.rows = rows;
  a.T = T;
  a.L = L;
  a.R = R;
  a.w = w;
  a.eps = eps;
  a.positions = positions;
  a.inv_freq = inv_freq;
  a.af = af;
  return a;
}
void kv_finalize(cudaStream_t s, uint16_t* cache, float* rows, int T, int L, int R, const float* w, float eps,
                 const int* positions, const float* inv_freq, float af) {
  if (T <= 0) return;
  launch_kernel("kv_finalize_kernel", kv_finalize_kernel<uint16_t>, dim3(T), dim3(kNormThreads), 0, s,
                kv_finalize_args(cache, false, rows, T, L, R, w, eps, positions, inv_freq, af));
}
void kv_finalize(cudaStream_t s, float* cache, float* rows, int T, int L, int R, const float* w, float eps,
                 const int* positions, const float* inv_freq, float af) {
  if (T <= 0) return;
  launch_kernel("kv_finalize_kernel", kv_finalize_kernel<float>, dim3(T), dim3(kNormThreads), 0, s,
                kv_finalize_args(cache, true, rows, T, L, R, w, eps, positions, inv_freq, af));
}

IndexerRowsArgs indexer_rows_args(uint8_t* out8, float* scales, const float* x, int N, int D, int rows_per_token,
                                  const float* ln_w, const float* ln_b, float ln_eps, int R, const int* positions,
                                  const float* inv_freq, float af, const int* rows_at, float* wts, float fold) {
  if (D < 1 || D > 1024 || (D & (D - 1)) != 0 || R > D) throw std::runtime_error("indexer_rows: D must be a power of two ≤ 1024");
  IndexerRowsArgs a;
  a.out8 = out8;
  a.scales = scales;
  a.x = x;
  a.N = N;
  a.D = D;
  a.rows_per_token = rows_per_token;
  a.ln_w = ln_w;
  a.ln_b = ln_b;
  a.ln_eps = ln_eps;
  a.R = R;
  a.positions = positions;
  a.inv_freq = inv_freq;
  a.af = af;
  a.rows_at = rows_at;
  a.wts = wts;
  a.fold = fold;
  return a;
}

void indexer_rows(cudaStream_t s, uint8_t* out8, float* scales, const float* x, int N, int D, int rows_per_token,
                  const float* ln_w, const float* ln_b, float ln_eps, int R, const int* positions, const float* inv_freq,
                  float af, const int* rows_at, float* wts, float fold) {
  if (N <= 0) return;
  const IndexerRowsArgs a =
      indexer_rows_args(out8, scales, x, N, D, rows_per_token, ln_w, ln_b, ln_eps, R, positions, inv_freq, af, rows_at, wts, fold);
  launch_kernel("indexer_rows_kernel", indexer_rows_kernel, dim3(N), dim3(D < 32 ? 32 : D), D * sizeof(float), s, a);
}

bool decode_row_ops_fit(int index_dim) { return index_dim <= kNormThreads; }

void decode_row_ops(cudaStream_t s, const KvFinalizeArgs& kv, const IndexerRowsArgs& keys, const IndexerRowsArgs& queries,
                    const AbsorbArgs& absorb) {
  const int D = std::max(keys.N > 0 ? keys.D : 0, queries.N > 0 ? queries.D : 0);
  if (D > kNormThreads) throw std::invalid_argument("decode_row_ops: indexer rows wider than 256");
  const int absorb_blocks = absorb.T * absorb.H * ((absorb.w.cols + kAbsorbCols - 1) / kAbsorbCols);
  const int blocks = std::max(kv.T, 0) + std::max(keys.N, 0) + std::max(queries.N, 0) + std::max(absorb_blocks, 0);
  if (blocks <= 0) return;
  launch_kernel("decode_row_ops_kernel", decode_row_ops_kernel, dim3(blocks), dim3(kNormThreads), D * sizeof(float), s, kv,
                keys, queries, absorb);
}

void hadamard_quant_rows(cudaStream_t s, uint8_t* out8, float* scales, const float* x, int N, int D, const int* rows_at,
                         bool hadamard) {
  if (N <= 0) return;
  if (D < 1 || D > 1024 || (D & (D - 1)) != 0) throw std::runtime_error("hadamard_quant_rows: D must be a power of two ≤ 1024");
  launch_kernel("hadamard_quant_kernel", hadamard_quant_kernel, dim3(N), dim3(D < 32 ? 32 : D), D * sizeof(float), s, out8, scales, nullptr, x, D, rows_at, hadamard, true);
  check(cudaGetLastError(), "hadamard_quant_rows");
}

void hadamard_rows_generic(cudaStream_t s, float* x, int N, int D) {
  if (N <= 0) return;
  if (D < 1 || D > 1024 || (D & (D - 1)) != 0) throw std::runtime_error("hadamard_rows: D must be a power of two ≤ 1024");
  launch_kernel("hadamard_quant_kernel", hadamard_quant_kernel, dim3(N), dim3(D < 32 ? 32 : D), D * sizeof(float), s, nullptr, nullptr, x, x, D, nullptr, true, false);
  check(cudaGetLastError(), "hadamard_rows");
}

void indexer_scores_f32_generic(cudaStream_t s, float* out, int ldo, const float* q, const float* w, const float* keys, int T,
                        int S, int Hi, int D, const int* positions) {
  if (T <= 0 || S <= 0) return;
  launch_indexer<false>(s, out, ldo, q, w, keys, nullptr, T, S, Hi, D, positions);
  check(cudaGetLastError(), "indexer_scores_f32");
}

void indexer_scores_fp8_generic(cudaStream_t s, float* out, int ldo, const uint8_t* q8, const float* w, const uint8_t* keys,
                        const float* key_scales, int T, int S, int Hi, int D, const int* positions) {
  if (T <= 0 || S <= 0) return;
  launch_indexer<true>(s, out, ldo, q8, w, keys, key_scales, T, S, Hi, D, positions);
  check(cudaGetLastError(), "indexer_scores_fp8");
}

void topk_generic(cudaStream_t s, int* idx, const float* scores, int ld, int T, int S, int k, const int* S_dev) {
  if (T <= 0 || k <= 0) return;
  launch_kernel("topk_kernel", topk_kernel, dim3(T), dim3(kTopkThreads), 0, s, idx, scores, ld, S, k, S_dev);
  check(cudaGetLastError(), "topk");
}

void moe_route(cudaStream_t s, int* ids, float* weights, const float* logits, int T, int E, int K, int scoring,
               int method, int nGroup, int topkGroup, const float* bias, bool normTopk, float scale) {
  if (T <= 0) return;
  if (E > kMaxRouteExperts || K > kMaxRouteK || K > E || nGroup > kMaxRouteGroups)
    throw std::invalid_argument("moe_route: E ≤ 512, K ≤ min(16, E), nGroup ≤ 64");
  RouteSpec r;
  r.logits = logits;
  r.bias = bias;
  r.E = E;
  r.K = K;
  r.scoring = scoring;
  r.method = method;
  r.n_group = nGroup;
  r.topk_group = topkGroup;
  r.norm_topk = normTopk;
  r.scale = scale;
  launch_kernel("moe_route_kernel", moe_route_kernel, dim3(T), dim3(32), 0, s, ids, weights, r);
}

int moe_permute(cudaStream_t s, const int* ids, int T, int K, int E, int* counts, int* slot_rows, int* slot_pos,
                int4* tiles, int* num_tiles) {
  if (T <= 0) return 0;
  launch_kernel("moe_permute_kernel", moe_permute_kernel, dim3(1), dim3(32), 0, s, ids, T, K, E, counts, slot_rows, slot_pos, tiles, num_tiles);
  check(cudaGetLastError(), "moe_permute");
  return (T * K) / kGemmTileM + E;
}

void moe_combine(cudaStream_t s, float* out, const float* y, const float* weights, const int* slot_pos, int T, int K,
                 int D, bool accumulate) {
  if (T <= 0) return;
  launch_kernel("moe_combine_kernel", moe_combine_kernel, dim3(dim3(blocks_for(D, 256), T)), dim3(256), 0, s, out, y, weights, slot_pos, K, D, accumulate);
  check(cudaGetLastError(), "moe_combine");
}

void sample(cudaStream_t s, int* token, const float* logits, int V, float temperature, const float* u) {
  launch_kernel("sample_kernel", sample_kernel, dim3(1), dim3(kSampleThreads), 0, s, token, logits, V, temperature, u);
  check(cudaGetLastError(), "sample");
}

}  // namespace cuda
}  // namespace glance
