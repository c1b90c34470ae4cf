// Lightning-indexer FP8 scores (contract in indexer.cuh).
//
// Tensor-core path (Hi a multiple of 8 up to 128, D = 64 or 128): the GEMM is keys [S, D] x q^T [D, Hi] per query,
// with M = keys (16 per mma), N = heads (8 per mma), K = D. A block (8 warps) holds QB queries' q (and weights) in
// shared memory and walks key tiles of 256 rows; each warp takes 32 keys of a tile and loads their bytes straight
// from the cache into A fragments with 16-byte loads: a quad of lanes reads 64 contiguous bytes of a key row, so a
// warp instruction reads 8 rows x 64 B with no waste. The k order inside a fragment is therefore not d order; the
// B fragments (q rows from shared memory) use the same byte-to-slot mapping, and a dot product does not care about
// the order of its terms. The epilogue is in registers: relu(acc) x weight summed over the thread's heads, then
// over the 4 lanes of a quad (2 shuffles), x key scale, one store per key and query.
//   sm_89+: mma.m16n8k32 e4m3 x e4m3 -> f32 (exact products, fp32 sums).
//   sm_80:  each e4m3 byte is widened to f16 (exact, value x 2^-8) and two mma.m16n8k16 f16 do the same k range;
//           the 2^16 is folded into the head weights (exact powers of two).
// Key tiles wholly past every query's position only write -inf. Decode (T = 1) splits the keys over blocks of one
// tile each; prefill gives every block all the key tiles of its query chunk, so q stays in shared memory.
//
// Other shapes: one thread per (query, key), fp32, same math.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "common.cuh"
#include "indexer.cuh"
#include "topk.cuh"

namespace glance {
namespace cuda {

namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kKeysPerWarp = 32;  // two groups of 16 (the mma M)
constexpr int kTileKeys = kWarps * kKeysPerWarp;

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 890
constexpr float kAccScale = 65536.0f;  // f16 path: products come out x 2^-16
#else
constexpr float kAccScale = 1.0f;
#endif

__device__ __forceinline__ void mma_f16_16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                              uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Four e4m3 bytes -> two f16x2 words (bytes 0, 1 -> lo; 2, 3 -> hi), exact: the hardware conversion on sm_89+ (true
// values), the integer one elsewhere (values x 2^-8, kAccScale undoes it). A and B go through the same function, so
// the pairing of k slots is the same on both sides whatever order the halves come in.
__device__ __forceinline__ void e4m3x4_to_f16x2(uint32_t w, uint32_t& lo, uint32_t& hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n cvt.rn.f16x2.e4m3x2 %0, l;\n cvt.rn.f16x2.e4m3x2 %1, h;\n}\n"
      : "=r"(lo), "=r"(hi)
      : "r"(w));
#else
  e4m3x4_to_f16x2_scaled(w, lo, hi);
#endif
}

// c += A[16 x 32] . B[32 x 8] with e4m3 operands in the m16n8k32 fragment layout (a0/a2: row g, a1/a3: row g+8).
__device__ __forceinline__ void mma_e4m3(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
  uint32_t a0l, a0h, a1l, a1h, a2l, a2h, a3l, a3h, b0l, b0h, b1l, b1h;
  e4m3x4_to_f16x2_scaled(a0, a0l, a0h);
  e4m3x4_to_f16x2_scaled(a1, a1l, a1h);
  e4m3x4_to_f16x2_scaled(a2, a2l, a2h);
  e4m3x4_to_f16x2_scaled(a3, a3l, a3h);
  e4m3x4_to_f16x2_scaled(b0, b0l, b0h);
  e4m3x4_to_f16x2_scaled(b1, b1l, b1h);
  // k slots (t*2, t*2+1) <- bytes 0,1 and (8+t*2, 9+t*2) <- bytes 2,3 of the same words in A and B.
  mma_f16_16816(c, a0l, a1l, a0h, a1h, b0l, b0h);
  mma_f16_16816(c, a2l, a3l, a2h, a3h, b1l, b1h);
#endif
}

__device__ __forceinline__ uint4 load_stream16(const uint8_t* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

template <int DC>
constexpr int q_row_units() {  // 16-byte units per q row in shared memory: D/16 padded to 4 mod 8 (no bank conflicts)
  return DC * 4 + ((4 - (DC * 4) % 8) + 8) % 8;
}

// ---- the tile arithmetic shared by the kernels below --------------------------------------------------------------
// kHoist (the default): Hopper's FP8 tensor path is wgmma; an m16n8k32 e4m3 mma.sync behaves as conversions of both
// operands plus f16 MMAs every time it runs (inferred from ncu's instruction count, SASS not inspected: ~1,500 per
// warp and key tile, 1.7 issued per SM cycle, the prefill kernel math-pipe throttled). With
// kHoist the key fragments are converted to f16 once per tile (reused by every head tile and query) and q is stored
// in shared memory already as f16, so the inner loop is f16 mma.sync alone (products of e4m3 values are exact in
// f16 x f16 -> fp32, as they are in the e4m3 MMA). !kHoist keeps the e4m3 MMA (GLANCE_INDEXER_PREFETCH=5, for A/B).
//
// q in shared memory, per (query, head) row: kHoist: D f16 (32-bit pairs in the order e4m3x4_to_f16x2 gives) + 16
// bytes of padding (the 8 lanes of a 16-byte load phase then hit distinct banks); else D e4m3 bytes in
// q_row_units<DC>() 16-byte units.
template <int DC, bool kHoist>
constexpr int q_row_bytes() {
  return kHoist ? DC * 128 + 16 : q_row_units<DC>() * 16;
}

template <int QB, int DC, bool kHoist>
__device__ __forceinline__ void load_q_smem(uint8_t* qs, const uint8_t* __restrict__ q, int t0, int nq, int Hi) {
  constexpr int D = DC * 64;
  constexpr int kRow = q_row_bytes<DC, kHoist>();
  constexpr int kUnits = D / 16;
  for (int i = threadIdx.x; i < QB * Hi * kUnits; i += kThreads) {
    const int qi = i / (Hi * kUnits);
    const int rem = i - qi * Hi * kUnits;
    const int h = rem / kUnits, u = rem - h * kUnits;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (qi < nq) v = reinterpret_cast<const uint4*>(q + (static_cast<int64_t>(t0 + qi) * Hi + h) * D)[u];
    uint8_t* row = qs + (qi * Hi + h) * kRow;
    if constexpr (kHoist) {
      uint4 lo, hi;  // f16 pairs of words x, y (lo) and z, w (hi)
      e4m3x4_to_f16x2(v.x, lo.x, lo.y);
      e4m3x4_to_f16x2(v.y, lo.z, lo.w);
      e4m3x4_to_f16x2(v.z, hi.x, hi.y);
      e4m3x4_to_f16x2(v.w, hi.z, hi.w);
      reinterpret_cast<uint4*>(row)[2 * u] = lo;
      reinterpret_cast<uint4*>(row)[2 * u + 1] = hi;
    } else {
      reinterpret_cast<uint4*>(row)[u] = v;
    }
  }
}

// part[qi][kg][r] += sum over this thread's heads h (columns tig*2, tig*2+1 of each 8-head tile) of
// w[qi][h] * relu(key row (kg, r) . q[qi][h]), for the warp's 32 keys in a (rows g, g+8 of key groups kg = 0, 1; a
// quad of lanes holds 64 contiguous bytes of a row per c).
template <int QB, int DC, bool kHoist>
__device__ __forceinline__ void score_keys(const uint4 (&a)[2][2][DC], const uint8_t* qs, const float* ws, int Hi,
                                           int g, int tig, float (&part)[QB][2][2]) {
  constexpr int kRow = q_row_bytes<DC, kHoist>();
#pragma unroll
  for (int qi = 0; qi < QB; qi++)
#pragma unroll
    for (int kg = 0; kg < 2; kg++) part[qi][kg][0] = part[qi][kg][1] = 0.0f;
  if constexpr (kHoist) {
    // one key group (16 rows) at a time: its f16 fragments take 32 registers (DC = 2) instead of 64, at the price
    // of reading q's fragments from shared memory once per group
#pragma unroll
    for (int kg = 0; kg < 2; kg++) {
      uint32_t af[2][DC][4][2];  // [r][c][word][lo, hi]
#pragma unroll
      for (int r = 0; r < 2; r++)
#pragma unroll
        for (int c = 0; c < DC; c++) {
          e4m3x4_to_f16x2(a[kg][r][c].x, af[r][c][0][0], af[r][c][0][1]);
          e4m3x4_to_f16x2(a[kg][r][c].y, af[r][c][1][0], af[r][c][1][1]);
          e4m3x4_to_f16x2(a[kg][r][c].z, af[r][c][2][0], af[r][c][2][1]);
          e4m3x4_to_f16x2(a[kg][r][c].w, af[r][c][3][0], af[r][c][3][1]);
        }
#pragma unroll
      for (int qi = 0; qi < QB; qi++) {
#pragma unroll 2
        for (int nt = 0; nt < Hi / 8; nt++) {
          // this lane's 16 f16 of head nt*8+g per c: d = c*64 + tig*16 .. +16, the bytes of its key fragments
          const uint8_t* qrow = qs + (qi * Hi + nt * 8 + g) * kRow + tig * 32;
          float acc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};  // two chains: even / odd words
#pragma unroll
          for (int c = 0; c < DC; c++) {
            const uint4 b0 = *reinterpret_cast<const uint4*>(qrow + c * 128);
            const uint4 b1 = *reinterpret_cast<const uint4*>(qrow + c * 128 + 16);
            const uint32_t bw[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
            for (int wd = 0; wd < 4; wd++)
              mma_f16_16816(acc[wd & 1], af[0][c][wd][0], af[1][c][wd][0], af[0][c][wd][1], af[1][c][wd][1],
                            bw[2 * wd], bw[2 * wd + 1]);
          }
          const float2 w = *reinterpret_cast<const float2*>(ws + qi * Hi + nt * 8 + tig * 2);
          const float x0 = acc[0][0] + acc[1][0], x1 = acc[0][1] + acc[1][1];
          const float x2 = acc[0][2] + acc[1][2], x3 = acc[0][3] + acc[1][3];
          part[qi][kg][0] += w.x * fmaxf(x0, 0.0f) + w.y * fmaxf(x1, 0.0f);
          part[qi][kg][1] += w.x * fmaxf(x2, 0.0f) + w.y * fmaxf(x3, 0.0f);
        }
      }
    }
  } else {
#pragma unroll
    for (int qi = 0; qi < QB; qi++) {
#pragma unroll 2
      for (int nt = 0; nt < Hi / 8; nt++) {
        const uint4* qrow = reinterpret_cast<const uint4*>(qs + (qi * Hi + nt * 8 + g) * kRow) + tig;
        uint4 b[DC];
#pragma unroll
        for (int c = 0; c < DC; c++) b[c] = qrow[c * 4];
        const float2 w = *reinterpret_cast<const float2*>(ws + qi * Hi + nt * 8 + tig * 2);
#pragma unroll
        for (int kg = 0; kg < 2; kg++) {
          float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
          for (int c = 0; c < DC; c++) {
            mma_e4m3(acc, a[kg][0][c].x, a[kg][1][c].x, a[kg][0][c].y, a[kg][1][c].y, b[c].x, b[c].y);
            mma_e4m3(acc, a[kg][0][c].z, a[kg][1][c].z, a[kg][0][c].w, a[kg][1][c].w, b[c].z, b[c].w);
          }
          part[qi][kg][0] += w.x * fmaxf(acc[0], 0.0f) + w.y * fmaxf(acc[1], 0.0f);
          part[qi][kg][1] += w.x * fmaxf(acc[2], 0.0f) + w.y * fmaxf(acc[3], 0.0f);
        }
      }
    }
  }
}

// PREFETCH: each block loops over several key tiles and loads the next tile's fragments before computing the
// current one (more registers: one resident block per SM); otherwise two blocks per SM and no prefetch.
// MINB: resident blocks per SM asked of the compiler (a register cap); more warps hide more memory latency.
template <int QB, int DC, bool PREFETCH, int MINB, bool kHoist>
__global__ void __launch_bounds__(kThreads, MINB) indexer_fp8_mma_kernel(
    float* __restrict__ out, int64_t ld_out, const uint8_t* __restrict__ q, const float* __restrict__ weights,
    const uint8_t* __restrict__ keys, const float* __restrict__ key_scales, int T, int S, int Hi,
    const int32_t* __restrict__ positions, int tiles_per_block, uint32_t* __restrict__ hist1, int64_t hist_stride) {
  pdl_wait();
  // No early pdl_launch_dependents(): the next kernel (top-k over these scores) would put its blocks on the SMs
  // while this bandwidth-bound kernel still streams keys (measured at 128K: 36.2 µs with the early trigger, 32.5 µs
  // without PDL); each block's exit lets the dependents start instead.
  constexpr int D = DC * 64;
  extern __shared__ uint4 smem[];
  uint8_t* qs = reinterpret_cast<uint8_t*>(smem);                                  // [QB][Hi] rows of q_row_bytes
  float* ws = reinterpret_cast<float*>(qs + QB * Hi * q_row_bytes<DC, kHoist>());  // [QB][Hi]
  uint32_t* hs = reinterpret_cast<uint32_t*>(ws + QB * Hi);  // [QB][2048] top-k level-1 histograms (fused)
  __shared__ int s_pos[QB];

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tig = lane & 3;
  const int t0 = blockIdx.y * QB;
  const int nq = min(QB, T - t0);
  // Key fragments of a tile: [key group][row g, g+8][64-byte chunk]; the next tile's are loaded before the current
  // one is computed, so its memory latency overlaps the mma work.
  auto load_tile = [&](uint4 (&dst)[2][2][DC], int tile) {
    const int s_warp = tile * kTileKeys + warp * kKeysPerWarp;
#pragma unroll
    for (int kg = 0; kg < 2; kg++)
#pragma unroll
      for (int r = 0; r < 2; r++) {
        const int s = min(s_warp + kg * 16 + r * 8 + g, S - 1);
        const uint8_t* row = keys + static_cast<int64_t>(s) * D + tig * 16;
#pragma unroll
        for (int c = 0; c < DC; c++) dst[kg][r][c] = load_stream16(row + c * 64);
      }
  };
  // The first tile's keys are requested before the q prologue, so the two memory latencies overlap (a tile wholly
  // past every position is loaded for nothing, which costs only bandwidth).
  const int n_tiles = (S + kTileKeys - 1) / kTileKeys;
  const int tile_begin = blockIdx.x * tiles_per_block;
  const int tile_end = min(n_tiles, tile_begin + tiles_per_block);
  uint4 a[2][2][DC];
  if (tile_begin < tile_end) load_tile(a, tile_begin);
  load_q_smem<QB, DC, kHoist>(qs, q, t0, nq, Hi);
  for (int i = tid; i < QB * Hi; i += kThreads) {
    const int qi = i / Hi;
    ws[i] = qi < nq ? weights[static_cast<int64_t>(t0 + qi) * Hi + (i - qi * Hi)] * kAccScale : 0.0f;
  }
  if (tid < QB) s_pos[tid] = tid < nq ? positions[t0 + tid] : -1;
  if (hist1 != nullptr)
    for (int i = tid; i < QB * 2048; i += kThreads) hs[i] = 0;
  __syncthreads();
  int pos[QB];
  int max_pos = -1;
#pragma unroll
  for (int qi = 0; qi < QB; qi++) {
    pos[qi] = s_pos[qi];
    max_pos = max(max_pos, pos[qi]);
  }

  for (int tile = tile_begin; tile < tile_end; tile++) {
    const int s_base = tile * kTileKeys;
    if (s_base > max_pos) {  // every key of the tile is after every query: -inf (and so are all later tiles)
      for (int i = tid; i < nq * kTileKeys; i += kThreads) {
        const int qi = i / kTileKeys, s = s_base + (i - qi * kTileKeys);
        if (s < S) out[static_cast<int64_t>(t0 + qi) * ld_out + s] = -INFINITY;
      }
      continue;
    }
    const int s_warp = s_base + warp * kKeysPerWarp;
    const bool have_next = PREFETCH && tile + 1 < tile_end && (tile + 1) * kTileKeys <= max_pos;
    uint4 an[2][2][DC];
    if constexpr (PREFETCH) {
      if (have_next) load_tile(an, tile + 1);
    } else {
      if (tile != tile_begin) load_tile(a, tile);
    }
    float part[QB][2][2];
    score_keys<QB, DC, kHoist>(a, qs, ws, Hi, g, tig, part);
    // Sum over the quad (the other heads of each row), then lane tig stores key (kg, r) = (tig / 2, tig % 2).
    const int s = s_warp + (tig >> 1) * 16 + (tig & 1) * 8 + g;
    const float ks = s < S ? key_scales[s] : 0.0f;
#pragma unroll
    for (int qi = 0; qi < QB; qi++) {
      float v[4];
#pragma unroll
      for (int j = 0; j < 4; j++) {
        float x = part[qi][j >> 1][j & 1];
        x += __shfl_xor_sync(0xffffffffu, x, 1);
        x += __shfl_xor_sync(0xffffffffu, x, 2);
        v[j] = x;
      }
      const float mine = tig == 0 ? v[0] : tig == 1 ? v[1] : tig == 2 ? v[2] : v[3];
      const bool stored = qi < nq && s < S;
      const float val = s <= pos[qi] ? mine * ks : -INFINITY;
      if (stored) out[static_cast<int64_t>(t0 + qi) * ld_out + s] = val;
      if (hist1 != nullptr) {
        const uint32_t key = stored ? topk_score_key(val) : 0u;
        warp_hist_add(hs + qi * 2048, key >> 21, key != 0);
      }
    }
    if (PREFETCH && have_next) {
#pragma unroll
      for (int kg = 0; kg < 2; kg++)
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
          for (int c = 0; c < DC; c++) a[kg][r][c] = an[kg][r][c];
    }
  }
  if (hist1 != nullptr) {
    __syncthreads();
    for (int i = tid; i < QB * 2048; i += kThreads) {
      const int qi = i >> 11;
      if (qi < nq && hs[i]) atomicAdd(hist1 + static_cast<int64_t>(t0 + qi) * hist_stride + (i & 2047), hs[i]);
    }
  }
}

__global__ void indexer_fp8_generic_kernel(float* __restrict__ out, int64_t ld_out, const uint8_t* __restrict__ q,
                                           const float* __restrict__ weights, const uint8_t* __restrict__ keys,
                                           const float* __restrict__ key_scales, int T, int S, int Hi, int D,
                                           const int32_t* __restrict__ positions) {
  pdl_wait();
  pdl_launch_dependents();
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s >= S) return;
  for (int t = blockIdx.y; t < T; t += gridDim.y) {
    const int p = positions[t];
    float r = -INFINITY;
    if (s <= p) {
      float total = 0.0f;
      for (int h = 0; h < Hi; h++) {
        const uint8_t* qh = q + (static_cast<int64_t>(t) * Hi + h) * D;
        const uint8_t* k = keys + static_cast<int64_t>(s) * D;
        float dot = 0.0f;
        for (int d = 0; d < D; d++) dot += e4m3_to_float(qh[d]) * e4m3_to_float(k[d]);
        total += weights[static_cast<int64_t>(t) * Hi + h] * fmaxf(dot, 0.0f);
      }
      r = total * key_scales[s];
    }
    out[static_cast<int64_t>(t) * ld_out + s] = r;
  }
}

int sm_count() {
  static int cached = 0;
  if (cached == 0) {
    int dev = 0;
    GLANCE_CUDA_CHECK(cudaGetDevice(&dev));
    GLANCE_CUDA_CHECK(cudaDeviceGetAttribute(&cached, cudaDevAttrMultiProcessorCount, dev));
  }
  return cached;
}

template <int QB, int DC, bool PREFETCH, int MINB, bool kHoist>
void launch_mma_variant(float* out, int64_t ld_out, const uint8_t* q, const float* weights, const uint8_t* keys,
                const float* key_scales, int T, int S, int Hi, const int32_t* positions, uint32_t* hist1,
                int64_t hist_stride, cudaStream_t stream) {
  const int q_chunks = (T + QB - 1) / QB;
  const int n_tiles = (S + kTileKeys - 1) / kTileKeys;
  const int sms = sm_count();
  int tiles_per_block = n_tiles;
  if (q_chunks < 2 * sms) {
    const int64_t want_blocks = (PREFETCH ? 2LL : 2LL * MINB) * sms;
    tiles_per_block = static_cast<int>(
        std::max<int64_t>(1, (static_cast<int64_t>(n_tiles) * q_chunks + want_blocks - 1) / want_blocks));
    tiles_per_block = std::min(tiles_per_block, n_tiles);
  }
  const dim3 grid((n_tiles + tiles_per_block - 1) / tiles_per_block, q_chunks);
  auto bytes = [](int heads, bool hist) {
    return static_cast<size_t>(QB) * heads * q_row_bytes<DC, kHoist>() + static_cast<size_t>(QB) * heads * 4 +
           (hist ? static_cast<size_t>(QB) * 2048 * 4 : 0);
  };
  // Raised once per kernel instantiation to the largest size it will ever need (QB * 128 heads, histograms
  // included), so that later calls, e.g. inside a CUDA graph capture, make no attribute calls.
  static const bool smem_raised = [&] {
    GLANCE_CUDA_CHECK(cudaFuncSetAttribute(indexer_fp8_mma_kernel<QB, DC, PREFETCH, MINB, kHoist>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes(128, true))));
    return true;
  }();
  (void)smem_raised;
  launch_kernel("indexer_fp8_mma_kernel", indexer_fp8_mma_kernel<QB, DC, PREFETCH, MINB, kHoist>, dim3(grid),
                dim3(kThreads), bytes(Hi, hist1 != nullptr), stream, out, ld_out, q, weights, keys, key_scales, T, S,
                Hi, positions, tiles_per_block, hist1, hist_stride);
  GLANCE_CUDA_CHECK_LAUNCH("indexer_fp8_mma_kernel");
}

// Variants, GLANCE_INDEXER_PREFETCH overriding the default for benchmarking (all but 5 with the f16 key fragments
// converted once per tile, kHoist):
//   0 = no prefetch, two blocks per SM (the default); 1 = prefetching the next tile, one block per SM;
//   2 = no prefetch, three blocks per SM (register cap 85: spills);
//   5 = variant 0 with the e4m3 mma.sync per fragment (the kernel before kHoist; on Hopper the MMA is emulated).
// (Tried and dropped, 2026-11-22, H100: keys streamed through a 4- or 2-stage cp.async shared-memory ring by a
// persistent grid, 21.6 / 18.7 µs against 17.2 µs for variant 0 at 128K: with 8 warps per SM the per-warp chain of
// ~1,000 instructions per 256-key tile, not the memory stream, sets the time.)
template <int QB, int DC>
void launch_mma(float* out, int64_t ld_out, const uint8_t* q, const float* weights, const uint8_t* keys,
                const float* key_scales, int T, int S, int Hi, const int32_t* positions, uint32_t* hist1,
                int64_t hist_stride, cudaStream_t stream) {
  char variant = '0';
  if (const char* e = std::getenv("GLANCE_INDEXER_PREFETCH")) variant = e[0];
  switch (variant) {
    case '1':
      launch_mma_variant<QB, DC, true, 1, true>(out, ld_out, q, weights, keys, key_scales, T, S, Hi, positions, hist1,
                                                hist_stride, stream);
      break;
    case '2':
      launch_mma_variant<QB, DC, false, 3, true>(out, ld_out, q, weights, keys, key_scales, T, S, Hi, positions, hist1,
                                                 hist_stride, stream);
      break;
    case '5':
      launch_mma_variant<QB, DC, false, 2, false>(out, ld_out, q, weights, keys, key_scales, T, S, Hi, positions, hist1,
                                                  hist_stride, stream);
      break;
    default:
      launch_mma_variant<QB, DC, false, 2, true>(out, ld_out, q, weights, keys, key_scales, T, S, Hi, positions, hist1,
                                                 hist_stride, stream);
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace

bool indexer_fast_path(int64_t Hi, int64_t D) { return Hi >= 8 && Hi <= 128 && Hi % 8 == 0 && (D == 64 || D == 128); }

namespace {

// Returns whether the tensor-core kernel ran (and so, when hist1 is given, accumulated the top-k histograms).
bool scores_impl(float* out, int64_t ld_out, const uint8_t* q, const float* weights, const uint8_t* keys,
                 const float* key_scales, int64_t T, int64_t S, int64_t Hi, int64_t D, const int32_t* positions,
                 uint32_t* hist1, int64_t hist_stride, cudaStream_t stream) {
  const char* op = "indexer_scores_fp8";
  if (T < 0 || S < 0 || Hi < 0 || D < 0) invalid_argument(op, "negative size");
  if (ld_out < S) invalid_argument(op, "ld_out = " + std::to_string(ld_out) + " is less than S = " + std::to_string(S));
  if (S > INT32_MAX - kTileKeys || T > INT32_MAX || Hi > 4096 || D > 4096)
    invalid_argument(op, "sizes out of range (S, T < 2^31, Hi, D <= 4096)");
  if (T == 0 || S == 0) return false;
  const int Ti = static_cast<int>(T), Si = static_cast<int>(S), Hii = static_cast<int>(Hi);
  if (indexer_fast_path(Hi, D) && aligned16(q) && aligned16(keys) && (T + 3) / 4 <= 65535) {
    const bool d128 = D == 128;
    if (T >= 4) {
      if (d128) launch_mma<4, 2>(out, ld_out, q, weights, keys, key_scales, Ti, Si, Hii, positions, hist1, hist_stride, stream);
      else launch_mma<4, 1>(out, ld_out, q, weights, keys, key_scales, Ti, Si, Hii, positions, hist1, hist_stride, stream);
    } else if (T >= 2) {
      if (d128) launch_mma<2, 2>(out, ld_out, q, weights, keys, key_scales, Ti, Si, Hii, positions, hist1, hist_stride, stream);
      else launch_mma<2, 1>(out, ld_out, q, weights, keys, key_scales, Ti, Si, Hii, positions, hist1, hist_stride, stream);
    } else {
      if (d128) launch_mma<1, 2>(out, ld_out, q, weights, keys, key_scales, Ti, Si, Hii, positions, hist1, hist_stride, stream);
      else launch_mma<1, 1>(out, ld_out, q, weights, keys, key_scales, Ti, Si, Hii, positions, hist1, hist_stride, stream);
    }
    return true;
  }
  const dim3 grid(static_cast<unsigned>((S + 127) / 128), static_cast<unsigned>(std::min<int64_t>(T, 65535)));
  launch_kernel("indexer_fp8_generic_kernel", indexer_fp8_generic_kernel, dim3(grid), dim3(128), 0, stream, out, ld_out, q, weights, keys, key_scales, Ti, Si, Hii,
                                                        static_cast<int>(D), positions);
  GLANCE_CUDA_CHECK_LAUNCH("indexer_fp8_generic_kernel");
  return false;
}

}  // namespace

void indexer_scores_fp8(float* out, int64_t ld_out, const uint8_t* q, const float* weights, const uint8_t* keys,
                        const float* key_scales, int64_t T, int64_t S, int64_t Hi, int64_t D,
                        const int32_t* positions, cudaStream_t stream) {
  scores_impl(out, ld_out, q, weights, keys, key_scales, T, S, Hi, D, positions, nullptr, 0, stream);
}

int64_t indexer_topk_default_chunk_rows(int64_t T, int64_t S) {
  const int64_t rows = std::max<int64_t>(1, (int64_t(1) << 28) / std::max<int64_t>(S, 1));  // 1 GiB of fp32 logits
  return std::min<int64_t>(std::max<int64_t>(T, 1), rows);
}

size_t indexer_topk_workspace_bytes(int64_t T, int64_t S, int64_t chunk_rows) {
  if (chunk_rows <= 0) chunk_rows = indexer_topk_default_chunk_rows(T, S);
  const int64_t rows = std::min<int64_t>(std::max<int64_t>(T, 1), chunk_rows);
  const size_t logits = (static_cast<size_t>(rows) * std::max<int64_t>(S, 1) * sizeof(float) + 255) / 256 * 256;
  return logits + topk_workspace_bytes(rows, S);
}

void indexer_topk(int32_t* idx, const uint8_t* q, const float* weights, const uint8_t* keys, const float* key_scales,
                  int64_t T, int64_t S, int64_t Hi, int64_t D, const int32_t* positions,
                  const int32_t* positions_host, int64_t k, int64_t chunk_rows, void* workspace,
                  size_t workspace_bytes, cudaStream_t stream) {
  const char* op = "indexer_topk";
  if (chunk_rows <= 0) chunk_rows = indexer_topk_default_chunk_rows(T, S);
  const size_t need = indexer_topk_workspace_bytes(T, S, chunk_rows);
  if (workspace == nullptr || workspace_bytes < need)
    invalid_argument(op, "workspace of " + std::to_string(workspace_bytes) + " bytes is too small (" +
                             std::to_string(need) + " needed: indexer_topk_workspace_bytes)");
  if (T <= 0 || k <= 0) return;
  const int64_t rows = std::min<int64_t>(T, chunk_rows);
  float* logits = static_cast<float*>(workspace);
  const size_t logits_bytes = (static_cast<size_t>(rows) * std::max<int64_t>(S, 1) * sizeof(float) + 255) / 256 * 256;
  void* topk_ws = static_cast<uint8_t*>(workspace) + logits_bytes;
  const size_t topk_ws_bytes = workspace_bytes - logits_bytes;
  for (int64_t t0 = 0; t0 < T; t0 += rows) {
    const int64_t n = std::min<int64_t>(rows, T - t0);
    int64_t s_used = S;
    if (positions_host != nullptr) {
      int64_t mx = -1;
      for (int64_t i = 0; i < n; i++) mx = std::max<int64_t>(mx, positions_host[t0 + i]);
      s_used = std::min<int64_t>(S, mx + 1);
    }
    if (s_used <= 0) {  // no query of the chunk sees any key
      GLANCE_CUDA_CHECK(cudaMemsetAsync(idx + t0 * k, 0xFF, static_cast<size_t>(n * k) * sizeof(int32_t), stream));
      continue;
    }
    // The tensor-core scores kernel also builds top-k's level-1 histograms (one pass over the logits saved).
    topk_prepare_fused_hist1(topk_ws, topk_ws_bytes, n, s_used, stream);
    const bool fused = scores_impl(logits, s_used, q + t0 * Hi * D, weights + t0 * Hi, keys, key_scales, n, s_used, Hi,
                                   D, positions + t0, static_cast<uint32_t*>(topk_ws), topk_hist1_row_stride(s_used),
                                   stream);
    if (fused) topk_after_fused_hist1(idx + t0 * k, logits, s_used, n, s_used, k, topk_ws, topk_ws_bytes, stream);
    else topk(idx + t0 * k, logits, s_used, n, s_used, k, topk_ws, topk_ws_bytes, stream);
  }
}

}  // namespace cuda
}  // namespace glance
