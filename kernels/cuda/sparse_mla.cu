// Sparse MLA (absorbed MQA form) over top-k selected latent rows (contract in sparse_mla.cuh).
//
// A block owns HG x 16 heads of one query and a range of its selected rows (all of them in prefill; a split in
// decode). Its warps are HG groups of WS: in Q.K^T a group's WS warps split the 32 tokens of a tile, in P.V they
// split the kv_lora output dims (NT n-tiles of 8 each), so accumulators stay in registers: O[16 heads][NT*8 dims]
// per warp. Per tile of 32 selected rows:
//   wait for the tile's cp.async gather; S = Q.K^T (ldmatrix + mma) -> shared; row softmax update (running max m,
//   sum l, rescale factor alpha) -> P (bf16) -> shared; O = O * alpha + P.V (V = the same rows, ldmatrix.trans);
//   then the freed buffer gathers tile j + 2.
// Scores are kept in the log2 domain (scale * log2 e folded in), so exp2f everywhere; m and l are per head.
// Split-KV partials (unnormalised O, m, l) go to the workspace and sparse_mla_combine_kernel merges them.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "common.cuh"
#include "sparse_mla.cuh"

namespace glance {
namespace cuda {

namespace {

constexpr int kTile = 32;       // selected rows per pipeline stage
constexpr int kSRow = kTile + 1;  // fp32 score row stride (shared)
constexpr int kPRow = kTile + 8;  // bf16 probability row stride (shared): 80 B, odd in 16-byte units
constexpr int kMaxDv = 512;
constexpr int kMaxD = 640;

struct Params {
  float* out;
  float* part_o;   // [nsplit][T][H][DV] fp32, or bf16 (uint16) when part_bf16
  float* part_ml;  // [nsplit][T][H][2]
  unsigned* arrivals;  // [T][head blocks] split arrival counters (fold_combine), or null: the combine kernel
  const uint16_t* q;
  const uint16_t* kv;
  const int32_t* indices;
  int S, T, H, DV, D, Dp, k;
  int tokens_per_split, nsplit;
  float scale_log2;
  bool part_bf16;  // split partials stored as bf16 (half the bytes the combine reads; not with fold_combine)
};

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__host__ __device__ constexpr int round_up16(int x) { return (x + 15) / 16 * 16; }

// Shared memory layout (bytes), shared by host and device.
struct Smem {
  int row;  // bf16 elements per q / kv row in shared memory
  size_t q, kv, s, p, alpha, m, l, valid, total;
  __host__ __device__ Smem(int rows, int Dp) {
    row = Dp + 8;  // Dp/8 + 1 16-byte units: odd, so ldmatrix rows hit distinct banks
    q = 0;
    kv = q + static_cast<size_t>(rows) * row * 2;
    s = kv + static_cast<size_t>(2) * kTile * row * 2;
    p = s + static_cast<size_t>(rows) * kSRow * 4;
    p = (p + 15) / 16 * 16;
    alpha = p + static_cast<size_t>(rows) * kPRow * 2;
    m = alpha + rows * 4;
    l = m + rows * 4;
    valid = l + rows * 4;
    total = valid + 2 * kTile * 4;
  }
};

// The split-KV combine folded into the split kernel: each block adds one to the arrival counter of its (query, head
// block) after storing its partials; the last to arrive merges the nsplit partials of its kRows heads (the combine
// kernel's formula, splits in order) and resets the counter to zero for the next call. Used when the partials of a
// head block are small (decode of few heads); scratch: kRows × nsplit weights + kRows inverses in shared memory.
template <int kRows, int kThreads>
__device__ __forceinline__ void fold_combine(const Params& p, int t, int hb, float* scratch) {
  __shared__ unsigned s_last;
  __threadfence();  // this thread's partial stores are visible device-wide before the arrival
  __syncthreads();
  unsigned* counter = p.arrivals + static_cast<int64_t>(t) * gridDim.y + hb;
  if (threadIdx.x == 0) s_last = atomicAdd(counter, 1u) == static_cast<unsigned>(p.nsplit) - 1u;
  __syncthreads();
  if (!s_last) return;
  __threadfence();  // the other splits' partials are read after their arrivals
  float* w = scratch;                        // [kRows][nsplit]
  float* inv = scratch + kRows * p.nsplit;   // [kRows]
  const int ns = p.nsplit, DV = p.DV;
  if (threadIdx.x < kRows) {
    const int r = threadIdx.x, h = hb * kRows + r;
    if (h < p.H) {
      const int64_t th = static_cast<int64_t>(t) * p.H + h;
      float M = -INFINITY;
      for (int i = 0; i < ns; i++) M = fmaxf(M, __ldcg(p.part_ml + (i * static_cast<int64_t>(p.T) * p.H + th) * 2));
      float lsum = 0.0f;
      for (int i = 0; i < ns; i++) {
        const float2 ml = __ldcg(reinterpret_cast<const float2*>(p.part_ml + (i * static_cast<int64_t>(p.T) * p.H + th) * 2));
        const float wi = (M == -INFINITY || ml.x == -INFINITY) ? 0.0f : exp2f(ml.x - M);
        w[r * ns + i] = wi;
        lsum += ml.y * wi;
      }
      inv[r] = lsum > 0.0f ? 1.0f / lsum : 0.0f;
    }
  }
  __syncthreads();
  const int q4 = DV / 4;
  const int64_t split_stride = static_cast<int64_t>(p.T) * p.H * DV;
  for (int idx = threadIdx.x; idx < kRows * q4; idx += kThreads) {
    const int r = idx / q4, d = (idx - r * q4) * 4, h = hb * kRows + r;
    if (h >= p.H) continue;
    const int64_t th = static_cast<int64_t>(t) * p.H + h;
    const float* base = p.part_o + th * DV + d;
    float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int i = 0; i < ns; i++) {
      const float4 v = __ldcg(reinterpret_cast<const float4*>(base + i * split_stride));
      const float wi = w[r * ns + i];
      o.x += v.x * wi;
      o.y += v.y * wi;
      o.z += v.z * wi;
      o.w += v.w * wi;
    }
    const float s = inv[r];
    *reinterpret_cast<float4*>(p.out + th * DV + d) = make_float4(o.x * s, o.y * s, o.z * s, o.w * s);
  }
  if (threadIdx.x == 0) *counter = 0u;
}

template <int HG, int WS, int NT>
__global__ void __launch_bounds__(HG* WS * 32) sparse_mla_kernel(const Params p) {
  pdl_wait();
  pdl_launch_dependents();
  constexpr int kWarps = HG * WS;
  constexpr int kThreads = kWarps * 32;
  constexpr int kRows = HG * 16;
  constexpr int kTPR = kThreads / kRows;  // softmax threads per head row
  constexpr int kCPT = kTile / kTPR;      // tokens per softmax thread
  constexpr int kTPW = kTile / WS;        // tokens per warp in Q.K^T
  constexpr int kNTQ = kTPW / 8;          // n-tiles per warp in Q.K^T
  static_assert(kNTQ == 1 || kNTQ == 2, "Q.K^T n-tiles per warp");
  static_assert(NT % 2 == 0, "P.V n-tiles come in pairs");

  extern __shared__ __align__(16) uint8_t smem[];
  const Smem L(kRows, p.Dp);
  __nv_bfloat16* q_s = reinterpret_cast<__nv_bfloat16*>(smem + L.q);
  __nv_bfloat16* kv_s = reinterpret_cast<__nv_bfloat16*>(smem + L.kv);
  float* s_s = reinterpret_cast<float*>(smem + L.s);
  __nv_bfloat16* p_s = reinterpret_cast<__nv_bfloat16*>(smem + L.p);
  float* alpha_s = reinterpret_cast<float*>(smem + L.alpha);
  float* m_s = reinterpret_cast<float*>(smem + L.m);
  float* l_s = reinterpret_cast<float*>(smem + L.l);
  int* valid_s = reinterpret_cast<int*>(smem + L.valid);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tig = lane & 3;
  const int split = blockIdx.x, hb = blockIdx.y, t = blockIdx.z;
  const int row = L.row;
  const int D = p.D, Dp = p.Dp, DV = p.DV;
  const int chunks = D / 8;  // 16-byte pieces of a row
  const int tok_begin = split * p.tokens_per_split;
  const int tok_end = min(p.k, tok_begin + p.tokens_per_split);
  const int n_tiles = tok_end > tok_begin ? (tok_end - tok_begin + kTile - 1) / kTile : 0;
  const int32_t* idx_t = p.indices + static_cast<int64_t>(t) * p.k;

  // Zero the padding columns [D, Dp) of q and of both kv buffers (never written by the gathers).
  if (Dp > D) {
    for (int r = tid; r < kRows + 2 * kTile; r += kThreads) {
      __nv_bfloat16* base = r < kRows ? q_s + r * row : kv_s + (r - kRows) * row;
      for (int c = D; c < Dp; c++) base[c] = __float2bfloat16(0.0f);
    }
  }
  if (tid < kRows) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.0f;
  }
  // Row copies: one warp per row (rows warp, warp + kWarps, ...), its lanes over the row's 16-byte pieces, so the
  // selected index is loaded once per row and no index arithmetic divides (a flat loop over rows × pieces with a
  // division by the piece count and an index load per piece made the gather ~1,800 instructions per warp and tile).
  // q rows of this block's heads (heads >= H: zeros).
  for (int r = warp; r < kRows; r += kWarps) {
    const int h = hb * kRows + r;
    const bool ok = h < p.H;
    const uint16_t* src = p.q + (static_cast<int64_t>(t) * p.H + (ok ? h : 0)) * D;
    for (int c = lane; c < chunks; c += 32) cp_async16(q_s + r * row + c * 8, src + c * 8, ok ? 16 : 0);
  }
  auto gather = [&](int tile, int buf) {
    const int base = tok_begin + tile * kTile;
    __nv_bfloat16* dst = kv_s + buf * kTile * row;
    // the tile's indices: lane j of every warp holds row j's (one load per warp, coalesced)
    const int my_pos = base + lane;
    const int my_id = my_pos < tok_end ? idx_t[my_pos] : -1;
#pragma unroll 2
    for (int r = warp; r < kTile; r += kWarps) {
      const int id = __shfl_sync(0xffffffffu, my_id, r);
      const bool ok = id >= 0 && id < p.S;
      const uint16_t* src = p.kv + static_cast<int64_t>(ok ? id : 0) * D;
      for (int c = lane; c < chunks; c += 32) cp_async16(dst + r * row + c * 8, src + c * 8, ok ? 16 : 0);
    }
    if (warp == 0) valid_s[buf * kTile + lane] = my_id >= 0 && my_id < p.S;
  };
  if (n_tiles > 0) gather(0, 0);
  cp_async_commit();
  if (n_tiles > 1) gather(1, 1);
  cp_async_commit();

  const int hg = warp / WS, wsi = warp % WS;
  float acc[NT][4];
#pragma unroll
  for (int i = 0; i < NT; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;

  for (int j = 0; j < n_tiles; j++) {
    const int buf = j & 1;
    const __nv_bfloat16* kvb = kv_s + buf * kTile * row;
    cp_async_wait<1>();
    __syncthreads();
    {  // S = Q.K^T for heads hg*16.. and tokens wsi*kTPW..
      // two accumulator sets (even / odd k steps) halve the dependent mma chain
      float sacc[kNTQ][4], sacc2[kNTQ][4];
#pragma unroll
      for (int n = 0; n < kNTQ; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) sacc[n][e] = sacc2[n][e] = 0.0f;
      const __nv_bfloat16* a_ptr = q_s + (hg * 16 + (lane & 15)) * row + (lane >> 4) * 8;
      const __nv_bfloat16* b_ptr;
      if (kNTQ == 2) b_ptr = kvb + (wsi * kTPW + (lane & 7) + ((lane >> 4) << 3)) * row + ((lane >> 3) & 1) * 8;
      else b_ptr = kvb + (wsi * kTPW + (lane & 7)) * row + ((lane >> 3) & 1) * 8;
      auto step = [&](int kk, float (&acc)[kNTQ][4]) {
        uint32_t a[4];
        ldmatrix_x4(a, a_ptr + kk);
        if (kNTQ == 2) {
          uint32_t b[4];
          ldmatrix_x4(b, b_ptr + kk);
          mma_bf16(acc[0], a, b[0], b[1]);
          mma_bf16(acc[kNTQ - 1], a, b[2], b[3]);
        } else {
          uint32_t b[2];
          ldmatrix_x2(b, b_ptr + kk);
          mma_bf16(acc[0], a, b[0], b[1]);
        }
      };
      int kk = 0;
#pragma unroll 2
      for (; kk + 32 <= Dp; kk += 32) {
        step(kk, sacc);
        step(kk + 16, sacc2);
      }
      if (kk < Dp) step(kk, sacc);
#pragma unroll
      for (int n = 0; n < kNTQ; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) sacc[n][e] += sacc2[n][e];
#pragma unroll
      for (int n = 0; n < kNTQ; n++) {
        const int col = wsi * kTPW + n * 8 + tig * 2;
        float* r0 = s_s + (hg * 16 + g) * kSRow + col;
        float* r1 = s_s + (hg * 16 + g + 8) * kSRow + col;
        r0[0] = sacc[n][0] * p.scale_log2;
        r0[1] = sacc[n][1] * p.scale_log2;
        r1[0] = sacc[n][2] * p.scale_log2;
        r1[1] = sacc[n][3] * p.scale_log2;
      }
    }
    __syncthreads();
    {  // online softmax, kTPR consecutive threads per head row
      const int r = tid / kTPR, part = tid % kTPR;
      float v[kCPT];
      float mx = -INFINITY;
#pragma unroll
      for (int c = 0; c < kCPT; c++) {
        const int tok = part * kCPT + c;
        v[c] = valid_s[buf * kTile + tok] ? s_s[r * kSRow + tok] : -INFINITY;
        mx = fmaxf(mx, v[c]);
      }
#pragma unroll
      for (int o = kTPR / 2; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_old = m_s[r];
      const float m_new = fmaxf(m_old, mx);
      float alpha = 1.0f, sum = 0.0f;
      if (m_new != -INFINITY) {
        alpha = exp2f(m_old - m_new);
#pragma unroll
        for (int c = 0; c < kCPT; c++) {
          v[c] = exp2f(v[c] - m_new);
          sum += v[c];
        }
      } else {
#pragma unroll
        for (int c = 0; c < kCPT; c++) v[c] = 0.0f;
      }
#pragma unroll
      for (int o = kTPR / 2; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
#pragma unroll
      for (int c = 0; c < kCPT; c++) p_s[r * kPRow + part * kCPT + c] = __float2bfloat16(v[c]);
      __syncwarp();
      if (part == 0) {
        m_s[r] = m_new;
        l_s[r] = l_s[r] * alpha + sum;
        alpha_s[r] = alpha;
      }
    }
    __syncthreads();
    {  // O = O * alpha + P.V for heads hg*16.. and dims wsi*NT*8..
      const float a_lo = alpha_s[hg * 16 + g], a_hi = alpha_s[hg * 16 + g + 8];
#pragma unroll
      for (int i = 0; i < NT; i++) {
        acc[i][0] *= a_lo;
        acc[i][1] *= a_lo;
        acc[i][2] *= a_hi;
        acc[i][3] *= a_hi;
      }
      const int d0 = wsi * NT * 8;
#pragma unroll
      for (int kk = 0; kk < kTile; kk += 16) {
        uint32_t a[4];
        ldmatrix_x4(a, p_s + (hg * 16 + (lane & 15)) * kPRow + kk + (lane >> 4) * 8);
        const __nv_bfloat16* v_ptr = kvb + (kk + (lane & 7) + ((lane >> 3) & 1) * 8) * row + (lane >> 4) * 8;
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
          const int d = d0 + np * 16;
          if (d < DV) {
            uint32_t b[4];
            ldmatrix_x4_trans(b, v_ptr + d);
            mma_bf16(acc[2 * np], a, b[0], b[1]);
            mma_bf16(acc[2 * np + 1], a, b[2], b[3]);
          }
        }
      }
    }
    __syncthreads();
    if (j + 2 < n_tiles) gather(j + 2, buf);
    cp_async_commit();
  }
  cp_async_wait<0>();
  __syncthreads();

  // Epilogue: rows g and g+8 of this warp's head group, dims d0 + nt*8 + tig*2 + {0, 1}.
  const int d0 = wsi * NT * 8;
#pragma unroll
  for (int half = 0; half < 2; half++) {
    const int r = hg * 16 + g + half * 8;
    const int h = hb * kRows + r;
    if (h >= p.H) continue;
    const float m = m_s[r], l = l_s[r];
    const int64_t th = static_cast<int64_t>(t) * p.H + h;
    if (p.nsplit == 1) {
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      float* o = p.out + th * DV;
#pragma unroll
      for (int i = 0; i < NT; i++) {
        const int d = d0 + i * 8 + tig * 2;
        if (d < DV) *reinterpret_cast<float2*>(o + d) = make_float2(acc[i][half * 2] * inv, acc[i][half * 2 + 1] * inv);
      }
    } else {
      const int64_t slot = static_cast<int64_t>(split) * p.T * p.H + th;
      if (p.part_bf16) {
        uint16_t* o = reinterpret_cast<uint16_t*>(p.part_o) + slot * DV;
#pragma unroll
        for (int i = 0; i < NT; i++) {
          const int d = d0 + i * 8 + tig * 2;
          if (d < DV) *reinterpret_cast<uint32_t*>(o + d) = pack_bf16x2(acc[i][half * 2], acc[i][half * 2 + 1]);
        }
      } else {
        float* o = p.part_o + slot * DV;
#pragma unroll
        for (int i = 0; i < NT; i++) {
          const int d = d0 + i * 8 + tig * 2;
          if (d < DV) *reinterpret_cast<float2*>(o + d) = make_float2(acc[i][half * 2], acc[i][half * 2 + 1]);
        }
      }
      if (wsi == 0 && tig == 0) *reinterpret_cast<float2*>(p.part_ml + slot * 2) = make_float2(m, l);
    }
  }
  if (p.nsplit > 1 && p.arrivals) fold_combine<kRows, kThreads>(p, t, hb, reinterpret_cast<float*>(smem + L.kv));
}

// out[t,h,:] = sum_i O_i * 2^(m_i - M) / sum_i l_i * 2^(m_i - M) over the splits (0 if no split saw a valid row).
// Grid (T·H, ceil(DV / 256)), 256 threads = kCombineParts parts × 64 column threads of 4 dims: part j sums the
// splits j, j + 4, ... (up to 8 loads in flight per thread, issued before the split weights are known), then the
// parts are added in order through shared memory. (One 128-thread block per (t, h) walking all splits took ~7 µs for
// 128 heads × 32 splits: its loads came in four dependent rounds after a serial prologue.)
constexpr int kCombineParts = 4, kCombineCols = 64;

// 4 partial dims at base + i (fp32 or bf16 partials), through L2 (written by the split kernel).
template <bool kBf16>
__device__ __forceinline__ float4 load_partial4(const float* base, int64_t i) {
  if constexpr (kBf16) {
    const uint2 v = __ldcg(reinterpret_cast<const uint2*>(reinterpret_cast<const uint16_t*>(base) + i));
    return make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xFFFF0000u), __uint_as_float(v.y << 16),
                       __uint_as_float(v.y & 0xFFFF0000u));
  } else {
    return __ldcg(reinterpret_cast<const float4*>(base + i));
  }
}

template <bool kBf16>
__global__ void __launch_bounds__(kCombineParts * kCombineCols) sparse_mla_combine_kernel(
    float* __restrict__ out, const float* __restrict__ part_o, const float* __restrict__ part_ml, int TH, int DV, int nsplit) {
  pdl_wait();
  pdl_launch_dependents();
  const int th = blockIdx.x;
  const int col = threadIdx.x % kCombineCols, part = threadIdx.x / kCombineCols;
  const int d = (blockIdx.y * kCombineCols + col) * 4;
  const bool live = d < DV;
  __shared__ float s_w[64];
  __shared__ float s_inv;
  __shared__ float4 s_part[kCombineParts - 1][kCombineCols];
  const int64_t split_stride = static_cast<int64_t>(TH) * DV;
  const int64_t first = static_cast<int64_t>(th) * DV + d;  // element offset of split 0
  // this thread's first (up to) 8 splits, in flight while warp 0 computes the weights
  float4 v[8];
#pragma unroll
  for (int j = 0; j < 8; j++) {
    const int i = part + kCombineParts * j;
    v[j] = live && i < nsplit ? load_partial4<kBf16>(part_o, first + i * split_stride) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    float m[2], l[2];
#pragma unroll
    for (int j = 0; j < 2; j++) {
      const int i = lane + 32 * j;
      const bool ok = i < nsplit;
      const float2 ml = ok ? __ldcg(reinterpret_cast<const float2*>(part_ml + (static_cast<int64_t>(i) * TH + th) * 2))
                           : make_float2(-INFINITY, 0.0f);
      m[j] = ml.x;
      l[j] = ml.y;
    }
    const float M = warp_max(fmaxf(m[0], m[1]));
    float lsum = 0.0f;
#pragma unroll
    for (int j = 0; j < 2; j++) {
      const float w = (M == -INFINITY || m[j] == -INFINITY) ? 0.0f : exp2f(m[j] - M);
      if (lane + 32 * j < nsplit) s_w[lane + 32 * j] = w;
      lsum += l[j] * w;
    }
    lsum = warp_sum(lsum);
    if (lane == 0) s_inv = lsum > 0.0f ? 1.0f / lsum : 0.0f;
  }
  __syncthreads();
  float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
  for (int j = 0; j < 8; j++) {
    const int i = part + kCombineParts * j;
    const float w = i < nsplit ? s_w[i] : 0.0f;
    o.x += v[j].x * w;
    o.y += v[j].y * w;
    o.z += v[j].z * w;
    o.w += v[j].w * w;
  }
  for (int i = part + kCombineParts * 8; i < nsplit; i += kCombineParts) {  // splits beyond 32
    const float4 x = live ? load_partial4<kBf16>(part_o, first + i * split_stride) : make_float4(0.f, 0.f, 0.f, 0.f);
    const float w = s_w[i];
    o.x += x.x * w;
    o.y += x.y * w;
    o.z += x.z * w;
    o.w += x.w * w;
  }
  if (part > 0) s_part[part - 1][col] = o;
  __syncthreads();
  if (part == 0 && live) {
#pragma unroll
    for (int q = 0; q < kCombineParts - 1; q++) {
      const float4 x = s_part[q][col];
      o.x += x.x;
      o.y += x.y;
      o.z += x.z;
      o.w += x.w;
    }
    const float inv = s_inv;
    *reinterpret_cast<float4*>(out + static_cast<int64_t>(th) * DV + d) = make_float4(o.x * inv, o.y * inv, o.z * inv, o.w * inv);
  }
}

constexpr int kMaxSplits = 64;

struct Plan {
  bool wide;  // 64 heads per block (prefill)
  int heads;  // heads per block: 64 (wide), else 32 or 16 (decode; GLANCE_MLA_DECODE_HEADS=16/32/64 overrides)
  int nsplit, tokens_per_split;
  bool fold;  // split-KV combine folded into the split kernel (fold_combine) instead of the combine kernel
  bool part_bf16;  // bf16 split partials (GLANCE_MLA_PARTIAL_BF16=1), combine kernel only
};

// Partials of one head block up to this size are merged by the last split (fold_combine, one block); larger ones by
// the combine kernel, whose T·H blocks read them in parallel. GLANCE_MLA_FOLD=0 / 1 forces either (benchmarks).
constexpr size_t kFoldMaxBytes = 128 * 1024;
// The arrival counters sit at the start of every split workspace, at a fixed place whatever T is, so that no call's
// partials overwrite another shape's counters (which must stay zero between calls). Folding needs T · head blocks
// ≤ kMaxArrivals (splits are only planned when the T · head blocks are fewer than the SMs).
constexpr int64_t kMaxArrivals = 1024;
constexpr size_t kArrivalBytes = kMaxArrivals * sizeof(unsigned);

int device_sms() {
  static int cached = 0;
  if (cached == 0) {
    int dev = 0;
    GLANCE_CUDA_CHECK(cudaGetDevice(&dev));
    GLANCE_CUDA_CHECK(cudaDeviceGetAttribute(&cached, cudaDevAttrMultiProcessorCount, dev));
  }
  return cached;
}

Plan make_plan(int64_t T, int64_t H, int64_t D, int64_t k) {
  Plan pl{false, 16, 1, static_cast<int>(std::max<int64_t>(k, 1)), false, false};
  const int sms = device_sms();
  static const int max_smem = max_shared_memory_per_block();
  // The wide kernel's attribute is raised for D = 640 once; it must fit the device's limit.
  const size_t wide_smem = Smem(64, round_up16(kMaxD)).total;
  pl.wide = H > 16 && T * ((H + 63) / 64) >= sms && wide_smem <= static_cast<size_t>(max_smem);
  if (pl.wide) {
    pl.heads = 64;
  } else {
    // Decode: 32 heads per block where there are that many (the gathered rows serve twice the heads of a 16-head
    // block: 19.3 vs 20.6 µs at 128 heads, H100, same run; one block per SM by shared memory); GLANCE_MLA_DECODE_HEADS
    // = 16 / 32 / 64 overrides (benchmarks; 64: 24.0 µs).
    int want = H >= 32 ? 32 : 16;
    if (const char* e = std::getenv("GLANCE_MLA_DECODE_HEADS")) want = e[0] == '3' ? 32 : (e[0] == '6' ? 64 : 16);
    if (want > 16 && H > 16 && Smem(want, round_up16(kMaxD)).total <= static_cast<size_t>(max_smem)) pl.heads = want;
  }
  const int64_t blocks = std::min<int64_t>(T, 65535) * ((H + pl.heads - 1) / pl.heads);
  if (!pl.wide && blocks < sms && k > kTile) {
    // aim at two blocks per SM for 16-head blocks (the narrow kernel's shared memory allows that), one for larger
    // head blocks; GLANCE_MLA_SPLIT_BLOCKS_PER_SM=1 / 4 halves / doubles the splits (benchmarks).
    int64_t per_sm = pl.heads == 16 ? 2 : 1;
    if (const char* e = std::getenv("GLANCE_MLA_SPLIT_BLOCKS_PER_SM")) per_sm = e[0] == '1' ? 1 : (e[0] == '4' ? 4 : 2);
    int64_t n = std::min<int64_t>({(k + kTile - 1) / kTile, (per_sm * sms + blocks - 1) / blocks, kMaxSplits});
    const int64_t tps = ((k + n - 1) / n + kTile - 1) / kTile * kTile;
    pl.tokens_per_split = static_cast<int>(tps);
    pl.nsplit = static_cast<int>((k + tps - 1) / tps);
  }
  if (pl.nsplit > 1 && !pl.wide) {
    const size_t partial_bytes = static_cast<size_t>(pl.heads) * pl.nsplit * D * sizeof(float);
    const size_t scratch = static_cast<size_t>(pl.heads) * (pl.nsplit + 1) * sizeof(float);
    const size_t kv_region = static_cast<size_t>(2) * kTile * (round_up16(static_cast<int>(D)) + 8) * 2;
    pl.fold = partial_bytes <= kFoldMaxBytes;
    if (const char* e = std::getenv("GLANCE_MLA_FOLD")) pl.fold = e[0] == '1';
    pl.fold = pl.fold && scratch <= kv_region && std::min<int64_t>(T, 65535) * ((H + pl.heads - 1) / pl.heads) <= kMaxArrivals;
    if (const char* e = std::getenv("GLANCE_MLA_PARTIAL_BF16")) pl.part_bf16 = !pl.fold && e[0] == '1';
  }
  return pl;
}

template <int HG, int WS, int NT>
void launch(const Params& p, int64_t T, int64_t H, cudaStream_t stream) {
  const size_t smem = Smem(HG * 16, p.Dp).total;
  // Raised once to the largest size any supported shape needs (D <= 640), so that later calls, e.g. inside a CUDA
  // graph capture, make no attribute calls.
  static const bool smem_raised = [] {
    GLANCE_CUDA_CHECK(cudaFuncSetAttribute(sparse_mla_kernel<HG, WS, NT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(Smem(HG * 16, round_up16(kMaxD)).total)));
    return true;
  }();
  (void)smem_raised;
  const dim3 grid(p.nsplit, static_cast<unsigned>((H + HG * 16 - 1) / (HG * 16)), static_cast<unsigned>(T));
  launch_kernel("sparse_mla_kernel", sparse_mla_kernel<HG, WS, NT>, dim3(grid), dim3(HG * WS * 32), smem, stream, p);
  GLANCE_CUDA_CHECK_LAUNCH("sparse_mla_kernel");
}

}  // namespace

size_t sparse_mla_workspace_bytes(int64_t T, int64_t H, int64_t kv_lora, int64_t rope, int64_t k) {
  if (T <= 0 || H <= 0 || k <= 0) return 0;
  const Plan pl = make_plan(T, H, kv_lora + rope, k);
  if (pl.nsplit <= 1) return 0;
  return kArrivalBytes + static_cast<size_t>(pl.nsplit) * T * H * (kv_lora + 2) * sizeof(float);
}

void sparse_mla_attention(float* out, const uint16_t* q, const uint16_t* kv, int64_t S, int64_t T, int64_t H,
                          int64_t kv_lora, int64_t rope, float scale, const int32_t* indices, int64_t k,
                          void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const char* op = "sparse_mla_attention";
  if (S < 0 || T < 0 || H < 0 || kv_lora < 0 || rope < 0 || k < 0) invalid_argument(op, "negative size");
  const int64_t D = kv_lora + rope;
  if (D % 8 != 0 || kv_lora % 16 != 0 || kv_lora > kMaxDv || D > kMaxD || kv_lora == 0)
    invalid_argument(op, "unsupported shape kv_lora = " + std::to_string(kv_lora) + ", rope = " +
                             std::to_string(rope) + " (need kv_lora % 16 == 0, kv_lora <= 512, (kv_lora + rope) % 8 "
                             "== 0, kv_lora + rope <= 640)");
  if (S > INT32_MAX || H > 65535 * 64 || k > INT32_MAX) invalid_argument(op, "sizes out of range");
  if (T == 0 || H == 0) return;
  if (k == 0) {
    GLANCE_CUDA_CHECK(cudaMemsetAsync(out, 0, static_cast<size_t>(T * H * kv_lora) * sizeof(float), stream));
    return;
  }
  const Plan pl = make_plan(T, H, D, k);
  Params p{};
  p.S = static_cast<int>(S);
  p.H = static_cast<int>(H);
  p.DV = static_cast<int>(kv_lora);
  p.D = static_cast<int>(D);
  p.Dp = round_up16(static_cast<int>(D));
  p.k = static_cast<int>(k);
  p.tokens_per_split = pl.tokens_per_split;
  p.nsplit = pl.nsplit;
  p.scale_log2 = scale * 1.4426950408889634f;
  p.part_bf16 = pl.part_bf16;
  p.kv = kv;
  if (pl.nsplit > 1) {
    const size_t need = sparse_mla_workspace_bytes(T, H, kv_lora, rope, k);
    if (workspace == nullptr || workspace_bytes < need)
      invalid_argument(op, "workspace of " + std::to_string(workspace_bytes) + " bytes is too small (" +
                               std::to_string(need) + " needed: sparse_mla_workspace_bytes)");
    if (pl.fold) p.arrivals = static_cast<unsigned*>(workspace);
    p.part_o = reinterpret_cast<float*>(static_cast<uint8_t*>(workspace) + kArrivalBytes);
    p.part_ml = p.part_o + static_cast<size_t>(pl.nsplit) * T * H * kv_lora;
  }
  for (int64_t t0 = 0; t0 < T; t0 += 65535) {
    const int64_t Tc = std::min<int64_t>(65535, T - t0);
    p.T = static_cast<int>(Tc);
    p.out = out + t0 * H * kv_lora;
    p.q = q + t0 * H * D;
    p.indices = indices + t0 * k;
    if (pl.wide) {
      // 16 warps (4 per head group, 128 output dims each) by default; GLANCE_MLA_WIDE_WARPS=8 picks 8 warps
      // (2 per head group, 256 dims each).
      const char* e = std::getenv("GLANCE_MLA_WIDE_WARPS");
      if (e != nullptr && e[0] == '8') launch<4, 2, 32>(p, Tc, H, stream);
      else launch<4, 4, 16>(p, Tc, H, stream);
    }
    else if (pl.heads == 64) launch<4, 4, 16>(p, Tc, H, stream);
    else if (pl.heads == 32) launch<2, 4, 16>(p, Tc, H, stream);
    else launch<1, 4, 16>(p, Tc, H, stream);
    if (pl.nsplit > 1 && !pl.fold) {
      const dim3 cgrid(static_cast<unsigned>(Tc * H), static_cast<unsigned>((p.DV + 4 * kCombineCols - 1) / (4 * kCombineCols)));
      if (pl.part_bf16)
        launch_kernel("sparse_mla_combine_kernel", sparse_mla_combine_kernel<true>, cgrid, dim3(kCombineParts * kCombineCols), 0,
                      stream, p.out, p.part_o, p.part_ml, static_cast<int>(Tc * H), p.DV, pl.nsplit);
      else
        launch_kernel("sparse_mla_combine_kernel", sparse_mla_combine_kernel<false>, cgrid, dim3(kCombineParts * kCombineCols), 0,
                      stream, p.out, p.part_o, p.part_ml, static_cast<int>(Tc * H), p.DV, pl.nsplit);
      GLANCE_CUDA_CHECK_LAUNCH("sparse_mla_combine_kernel");
    }
  }
}

}  // namespace cuda
}  // namespace glance
