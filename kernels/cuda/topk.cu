// Exact multi-block radix top-k (contract and design in topk.cuh).
//
// Per row, the workspace holds the three level histograms, the resolved state of each level (written by block 0
// of the kernel that resolves it, read by the next kernel, so every kernel scans one histogram only), and the
// per-chunk (above, equal) counts of the emit pass. Histogram updates are warp-aggregated (warp_hist_add): scores
// cluster in a few top-bit buckets.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <cstdlib>

#include "common.cuh"
#include "topk.cuh"

namespace glance {
namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = 16;
constexpr int kChunk = kThreads * kPerThread;  // columns per block of the multi-kernel passes
// The single-kernel path cuts a row into chunks of 1024 columns (4 per thread) when the grid still fits the SMs
// (a 128K row: 128 blocks, each pass a quarter as long), else of 4096. The workspace has room for the per-chunk
// counts of the finer cut.
constexpr int kFinePerThread = 4;
constexpr int kFineChunk = kThreads * kFinePerThread;
constexpr int kBins1 = 2048, kBins2 = 2048, kBins3 = 1024;
// Per-row workspace, in uint32 words: H1 | H2 | H3 | state | per-chunk (above, equal).
// state: [0] all finite selected (fewer than k+1 finite scores), [1] level-1 bucket, [2] still needed after level 1,
//        [3] 22-bit prefix after level 2, [4] still needed after level 2, [5] threshold key, [6] equal keys taken.
constexpr int kOffH2 = kBins1, kOffH3 = kBins1 + kBins2, kOffState = kBins1 + kBins2 + kBins3,
              kOffCounts = kOffState + 8;

inline int64_t row_words(int64_t n_chunks) { return kOffCounts + 2 * n_chunks; }

using Scan = cub::BlockScan<uint32_t, kThreads>;

struct Resolved {
  uint32_t bucket, need, total, count;  // count: keys in the bucket
};

// Bucket of hist[0, NB) (larger bucket = larger keys) where the count from the top reaches `need` (>= 1), and how
// many keys of that bucket are still needed. total = all keys counted. Block-wide; every thread gets the answer.
template <int NB>
__device__ Resolved resolve(const uint32_t* hist, uint32_t need, typename Scan::TempStorage& tmp, uint32_t* s_out) {
  constexpr int kPer = NB / kThreads;
  const int first = NB - 1 - threadIdx.x * kPer;  // this thread's bins: first, first-1, ..., first-kPer+1
  uint32_t h[kPer];
  uint32_t sum = 0;
#pragma unroll
  for (int j = 0; j < kPer; j++) {
    h[j] = __ldcg(hist + first - j);  // L2: written by other blocks
    sum += h[j];
  }
  uint32_t above, total;
  Scan(tmp).ExclusiveSum(sum, above, total);
  if (threadIdx.x == 0) {
    s_out[0] = 0;
    s_out[1] = need;
    s_out[2] = 0;
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j < kPer; j++) {
    if (above < need && above + h[j] >= need) {
      s_out[0] = static_cast<uint32_t>(first - j);
      s_out[1] = need - above;
      s_out[2] = h[j];
    }
    above += h[j];
  }
  __syncthreads();
  Resolved r{s_out[0], s_out[1], total, s_out[2]};
  __syncthreads();
  return r;
}

// Level-1 histogram (top 11 bits) of one chunk, added into the row's H1.
__global__ void __launch_bounds__(kThreads) topk_hist1_kernel(const float* __restrict__ scores, int64_t ld, int S,
                                                               uint32_t* __restrict__ ws, int64_t row_stride,
                                                               int row0) {
  pdl_wait();
  pdl_launch_dependents();
  __shared__ uint32_t h[kBins1];
  const int64_t row = row0 + blockIdx.y;
  for (int b = threadIdx.x; b < kBins1; b += kThreads) h[b] = 0;
  __syncthreads();
  const float* r = scores + row * ld;
  const int base = blockIdx.x * kChunk;
#pragma unroll 4
  for (int j = 0; j < kPerThread; j++) {
    const int s = base + j * kThreads + threadIdx.x;
    const uint32_t key = s < S ? topk_score_key(r[s]) : 0u;
    warp_hist_add(h, key >> 21, key != 0);
  }
  __syncthreads();
  uint32_t* H1 = ws + row * row_stride;
  for (int b = threadIdx.x; b < kBins1; b += kThreads)
    if (h[b]) atomicAdd(&H1[b], h[b]);
}

// Level 2: resolves level 1 (block 0 stores it), then histograms bits 20..10 of the keys in the level-1 bucket.
__global__ void __launch_bounds__(kThreads) topk_hist2_kernel(const float* __restrict__ scores, int64_t ld, int S,
                                                               uint32_t* __restrict__ ws, int64_t row_stride, int row0,
                                                               uint32_t k) {
  pdl_wait();
  pdl_launch_dependents();
  __shared__ typename Scan::TempStorage tmp;
  __shared__ uint32_t s_out[3];
  __shared__ uint32_t h[kBins2];
  const int64_t row = row0 + blockIdx.y;
  uint32_t* ws_row = ws + row * row_stride;
  const Resolved r1 = resolve<kBins1>(ws_row, k, tmp, s_out);
  const bool all_finite = r1.total <= k;
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    ws_row[kOffState] = all_finite;
    ws_row[kOffState + 1] = r1.bucket;
    ws_row[kOffState + 2] = r1.need;
  }
  if (all_finite) return;
  for (int b = threadIdx.x; b < kBins2; b += kThreads) h[b] = 0;
  __syncthreads();
  const float* r = scores + row * ld;
  const int base = blockIdx.x * kChunk;
#pragma unroll 4
  for (int j = 0; j < kPerThread; j++) {
    const int s = base + j * kThreads + threadIdx.x;
    const uint32_t key = s < S ? topk_score_key(r[s]) : 0u;
    warp_hist_add(h, (key >> 10) & (kBins2 - 1), key != 0 && (key >> 21) == r1.bucket);
  }
  __syncthreads();
  uint32_t* H = ws_row + kOffH2;
  for (int b = threadIdx.x; b < kBins2; b += kThreads)
    if (h[b]) atomicAdd(&H[b], h[b]);
}

// Level 3: resolves level 2 (block 0 stores it), then histograms bits 9..0 of the keys matching the 22-bit prefix.
__global__ void __launch_bounds__(kThreads) topk_hist3_kernel(const float* __restrict__ scores, int64_t ld, int S,
                                                               uint32_t* __restrict__ ws, int64_t row_stride,
                                                               int row0) {
  pdl_wait();
  pdl_launch_dependents();
  __shared__ typename Scan::TempStorage tmp;
  __shared__ uint32_t s_out[3];
  __shared__ uint32_t h[kBins3];
  const int64_t row = row0 + blockIdx.y;
  uint32_t* ws_row = ws + row * row_stride;
  if (ws_row[kOffState]) return;  // all finite selected
  const uint32_t b1 = ws_row[kOffState + 1], n1 = ws_row[kOffState + 2];
  const Resolved r2 = resolve<kBins2>(ws_row + kOffH2, n1, tmp, s_out);
  const uint32_t prefix = b1 << 11 | r2.bucket;
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    ws_row[kOffState + 3] = prefix;
    ws_row[kOffState + 4] = r2.need;
  }
  for (int b = threadIdx.x; b < kBins3; b += kThreads) h[b] = 0;
  __syncthreads();
  const float* r = scores + row * ld;
  const int base = blockIdx.x * kChunk;
#pragma unroll 4
  for (int j = 0; j < kPerThread; j++) {
    const int s = base + j * kThreads + threadIdx.x;
    const uint32_t key = s < S ? topk_score_key(r[s]) : 0u;
    warp_hist_add(h, key & (kBins3 - 1), key != 0 && (key >> 10) == prefix);
  }
  __syncthreads();
  uint32_t* H = ws_row + kOffH3;
  for (int b = threadIdx.x; b < kBins3; b += kThreads)
    if (h[b]) atomicAdd(&H[b], h[b]);
}

// Resolves level 3 (the threshold key and how many keys equal to it are taken; block 0 stores both), then counts
// per chunk the keys above the threshold and equal to it.
__global__ void __launch_bounds__(kThreads) topk_count_kernel(const float* __restrict__ scores, int64_t ld, int S,
                                                               uint32_t* __restrict__ ws, int64_t row_stride,
                                                               int row0) {
  pdl_wait();
  pdl_launch_dependents();
  __shared__ typename Scan::TempStorage tmp;
  __shared__ uint32_t s_out[3];
  const int64_t row = row0 + blockIdx.y;
  uint32_t* ws_row = ws + row * row_stride;
  uint32_t thr = 0, need_eq = 0;  // all finite: threshold key 0 (non-finite), no equal key taken
  if (!ws_row[kOffState]) {
    const uint32_t prefix = ws_row[kOffState + 3], n2 = ws_row[kOffState + 4];
    const Resolved r3 = resolve<kBins3>(ws_row + kOffH3, n2, tmp, s_out);
    thr = prefix << 10 | r3.bucket;
    need_eq = r3.need;
  }
  const float* r = scores + row * ld;
  const int base = blockIdx.x * kChunk;
  uint32_t above = 0, equal = 0;
#pragma unroll 4
  for (int j = 0; j < kPerThread; j++) {
    const int s = base + j * kThreads + threadIdx.x;
    if (s < S) {
      const uint32_t key = topk_score_key(r[s]);
      above += key > thr;
      equal += key == thr;
    }
  }
  using Reduce = cub::BlockReduce<uint32_t, kThreads>;
  __shared__ typename Reduce::TempStorage rtmp;
  const uint32_t packed = Reduce(rtmp).Sum(above | (equal << 16));  // both <= 4096 per chunk
  if (threadIdx.x == 0) {
    ws_row[kOffCounts + 2 * blockIdx.x] = packed & 0xFFFFu;
    ws_row[kOffCounts + 2 * blockIdx.x + 1] = packed >> 16;
    if (blockIdx.x == 0) {
      ws_row[kOffState + 5] = thr;
      ws_row[kOffState + 6] = need_eq;
    }
  }
}

// Sums of the per-chunk (above, equal) counts over the chunks before `chunk` and over all chunks, run by the
// block's first warp into s_before / s_total (the caller syncs). kVolatile reads the counts past the L1 (__ldcg), for
// the fused kernel whose other blocks wrote them before a grid barrier.
template <bool kVolatile>
__device__ __forceinline__ void chunk_count_sums(const uint32_t* ws_row, int chunk, int n_chunks, uint32_t* s_before,
                                                 uint32_t* s_total) {
  if (threadIdx.x >= 32) return;
  uint32_t a_before = 0, e_before = 0, a_all = 0, e_all = 0;
  for (int c0 = 0; c0 < n_chunks; c0 += 4 * 32) {
    // four chunks per lane with their loads issued together (one L2 round trip instead of four for a 128K row)
    uint2 v[4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int c = c0 + j * 32 + static_cast<int>(threadIdx.x);
      const uint2* at = reinterpret_cast<const uint2*>(ws_row + kOffCounts + 2 * c);
      v[j] = c < n_chunks ? (kVolatile ? __ldcg(at) : *at) : make_uint2(0u, 0u);
    }
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int c = c0 + j * 32 + static_cast<int>(threadIdx.x);
      if (c < chunk) {
        a_before += v[j].x;
        e_before += v[j].y;
      }
      a_all += v[j].x;
      e_all += v[j].y;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    a_before += __shfl_xor_sync(0xffffffffu, a_before, o);
    e_before += __shfl_xor_sync(0xffffffffu, e_before, o);
    a_all += __shfl_xor_sync(0xffffffffu, a_all, o);
    e_all += __shfl_xor_sync(0xffffffffu, e_all, o);
  }
  if (threadIdx.x == 0) {
    s_before[0] = a_before;
    s_before[1] = e_before;
    s_total[0] = a_all;
    s_total[1] = e_all;
  }
}

// Writes each chunk's selected columns in column order at the offset the earlier chunks leave; chunk 0 pads the row.
__global__ void __launch_bounds__(kThreads) topk_emit_kernel(int32_t* __restrict__ idx, const float* __restrict__ scores,
                                                              int64_t ld, int S, const uint32_t* __restrict__ ws,
                                                              int64_t row_stride, int row0, int n_chunks, int k) {
  pdl_wait();
  pdl_launch_dependents();
  __shared__ typename Scan::TempStorage tmp;
  __shared__ uint32_t s_before[2], s_total[2];
  const int64_t row = row0 + blockIdx.y;
  const uint32_t* ws_row = ws + row * row_stride;
  const uint32_t thr = ws_row[kOffState + 5], need_eq = ws_row[kOffState + 6];
  const int chunk = blockIdx.x;
  chunk_count_sums<false>(ws_row, chunk, n_chunks, s_before, s_total);  // one warp
  __syncthreads();
  const uint32_t a_before = s_before[0], e_before = s_before[1];
  const uint32_t take_eq = e_before >= need_eq ? 0u : need_eq - e_before;  // equal keys this chunk may still take
  const uint32_t out_base = a_before + min(e_before, need_eq);
  int32_t* out = idx + row * static_cast<int64_t>(k);

  // Each thread owns kPerThread consecutive columns.
  const float* r = scores + row * ld;
  const int s0 = chunk * kChunk + threadIdx.x * kPerThread;
  uint32_t keys[kPerThread];
  uint32_t ca = 0, ce = 0;
#pragma unroll
  for (int j = 0; j < kPerThread; j++) {
    const int s = s0 + j;
    keys[j] = s < S ? topk_score_key(r[s]) : 0u;
    ca += keys[j] > thr;
    ce += keys[j] == thr && s < S;
  }
  uint32_t prefix;
  Scan(tmp).ExclusiveSum(ca | (ce << 16), prefix);
  uint32_t a_i = prefix & 0xFFFFu, e_i = prefix >> 16;
#pragma unroll
  for (int j = 0; j < kPerThread; j++) {
    const int s = s0 + j;
    if (s >= S) break;
    if (keys[j] > thr) {
      out[out_base + a_i + min(e_i, take_eq)] = s;
      a_i++;
    } else if (keys[j] == thr) {
      if (e_i < take_eq) out[out_base + a_i + e_i] = s;
      e_i++;
    }
  }
  if (chunk == 0) {
    const uint32_t selected = s_total[0] + min(s_total[1], need_eq);
    for (int i = static_cast<int>(selected) + threadIdx.x; i < k; i += kThreads) out[i] = -1;
  }
}

// ---- single-kernel path for small grids (decode) -----------------------------------------------------------------
// When every block of the grid can be resident at once (rows x chunks <= SMs), the passes run in one kernel with a
// barrier per row between them (an atomic arrival counter in the row's workspace, zeroed with it), which saves the
// launch gaps of the multi-kernel path. Same arithmetic, same output.

__device__ __forceinline__ void row_barrier(uint32_t* counter, uint32_t nblocks, uint32_t& target) {
  __syncthreads();
  target += nblocks;
  if (threadIdx.x == 0) {
    __threadfence();  // the block's histogram / count writes before its arrival
    atomicAdd(counter, 1u);
    uint32_t v;
    do {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(counter) : "memory");
    } while (v < target);
  }
  __syncthreads();
}

template <bool kHist1, int PT>
__global__ void __launch_bounds__(kThreads) topk_single_kernel(int32_t* __restrict__ idx, const float* __restrict__ scores,
                                                                int64_t ld, int S, uint32_t* __restrict__ ws,
                                                                int64_t row_stride, int n_chunks, uint32_t k) {
  pdl_wait();
  pdl_launch_dependents();
  __shared__ typename Scan::TempStorage tmp;
  __shared__ uint32_t s_out[3];
  __shared__ uint32_t h[kBins1];
  __shared__ uint32_t s_before[2], s_total[2];
  // The chunk's keys in column order (index p + p / PT: the emit reads PT consecutive columns per thread without
  // bank conflicts), so the emit needs no second, uncoalesced read of the scores.
  constexpr int kCh = kThreads * PT;  // columns per block
  __shared__ uint32_t s_keys[kCh + kCh / PT];
  const int64_t row = blockIdx.y;
  uint32_t* ws_row = ws + row * row_stride;
  uint32_t* counter = ws_row + kOffState + 7;
  uint32_t target = 0;
  const float* r = scores + row * ld;
  const int chunk = blockIdx.x;
  const int base = chunk * kCh;
  // Keys of this thread's 16 columns (strided, as the histogram passes read them), kept in registers.
  uint32_t keys[PT];
#pragma unroll
  for (int j = 0; j < PT; j++) {
    const int s = base + j * kThreads + threadIdx.x;
    keys[j] = s < S ? topk_score_key(r[s]) : 0u;
    const int p = j * kThreads + threadIdx.x;
    s_keys[p + p / PT] = keys[j];
  }
  auto flush = [&](uint32_t* H, int bins) {
    __syncthreads();
    for (int b = threadIdx.x; b < bins; b += kThreads)
      if (h[b]) atomicAdd(&H[b], h[b]);
  };
  auto clear = [&](int bins) {
    for (int b = threadIdx.x; b < bins; b += kThreads) h[b] = 0;
    __syncthreads();
  };
  if (kHist1) {
    clear(kBins1);
#pragma unroll
    for (int j = 0; j < PT; j++) warp_hist_add(h, keys[j] >> 21, keys[j] != 0);
    flush(ws_row, kBins1);
    row_barrier(counter, gridDim.x, target);
  }
  const Resolved r1 = resolve<kBins1>(ws_row, k, tmp, s_out);
  const bool all_finite = r1.total <= k;
  uint32_t thr = 0, need_eq = 0;
  // A level whose threshold bucket is taken whole ends the search: every key from that bucket up is selected, which
  // "key > threshold" with threshold = (bucket << bits) - 1 and no equal keys expresses. Level 2's bucket usually
  // holds a handful of keys, so this mostly saves the level-3 pass and its barrier. The decision is the same in
  // every block of the row (same histograms), so all blocks meet the same barriers.
  if (!all_finite && r1.count == r1.need) {
    thr = (r1.bucket << 21) - 1;
  } else if (!all_finite) {
    clear(kBins2);
#pragma unroll
    for (int j = 0; j < PT; j++)
      warp_hist_add(h, (keys[j] >> 10) & (kBins2 - 1), keys[j] != 0 && (keys[j] >> 21) == r1.bucket);
    flush(ws_row + kOffH2, kBins2);
  }
  row_barrier(counter, gridDim.x, target);
  if (!all_finite && r1.count != r1.need) {
    const Resolved r2 = resolve<kBins2>(ws_row + kOffH2, r1.need, tmp, s_out);
    const uint32_t prefix = r1.bucket << 11 | r2.bucket;
    if (r2.count == r2.need) {
      thr = (prefix << 10) - 1;
    } else {
      clear(kBins3);
#pragma unroll
      for (int j = 0; j < PT; j++)
        warp_hist_add(h, keys[j] & (kBins3 - 1), keys[j] != 0 && (keys[j] >> 10) == prefix);
      flush(ws_row + kOffH3, kBins3);
      row_barrier(counter, gridDim.x, target);
      const Resolved r3 = resolve<kBins3>(ws_row + kOffH3, r2.need, tmp, s_out);
      thr = prefix << 10 | r3.bucket;
      need_eq = r3.need;
    }
  }
  // Per-chunk counts of keys above / equal to the threshold.
  {
    uint32_t above = 0, equal = 0;
#pragma unroll
    for (int j = 0; j < PT; j++) {
      const int s = base + j * kThreads + threadIdx.x;
      above += keys[j] > thr;
      equal += keys[j] == thr && s < S;
    }
    using Reduce = cub::BlockReduce<uint32_t, kThreads>;
    __shared__ typename Reduce::TempStorage rtmp;
    const uint32_t packed = Reduce(rtmp).Sum(above | (equal << 16));
    if (threadIdx.x == 0) {
      ws_row[kOffCounts + 2 * chunk] = packed & 0xFFFFu;
      ws_row[kOffCounts + 2 * chunk + 1] = packed >> 16;
    }
  }
  row_barrier(counter, gridDim.x, target);
  // Emit (as topk_emit_kernel).
  chunk_count_sums<true>(ws_row, chunk, n_chunks, s_before, s_total);
  __syncthreads();
  const uint32_t a_before = s_before[0], e_before = s_before[1];
  const uint32_t take_eq = e_before >= need_eq ? 0u : need_eq - e_before;
  const uint32_t out_base = a_before + min(e_before, need_eq);
  int32_t* out = idx + row * static_cast<int64_t>(k);
  // The emit walks contiguous columns per thread (position order), so the keys are re-read in that layout.
  const int s0 = base + threadIdx.x * PT;
  uint32_t ck[PT];
  uint32_t ca = 0, ce = 0;
#pragma unroll
  for (int j = 0; j < PT; j++) {
    const int s = s0 + j;
    ck[j] = s_keys[threadIdx.x * (PT + 1) + j];  // p = tid * PT + j  ->  p + p / PT
    ca += ck[j] > thr;
    ce += ck[j] == thr && s < S;
  }
  uint32_t prefix;
  Scan(tmp).ExclusiveSum(ca | (ce << 16), prefix);
  uint32_t a_i = prefix & 0xFFFFu, e_i = prefix >> 16;
#pragma unroll
  for (int j = 0; j < PT; j++) {
    const int s = s0 + j;
    if (s >= S) break;
    if (ck[j] > thr) {
      out[out_base + a_i + min(e_i, take_eq)] = s;
      a_i++;
    } else if (ck[j] == thr) {
      if (e_i < take_eq) out[out_base + a_i + e_i] = s;
      e_i++;
    }
  }
  if (chunk == 0) {
    const uint32_t selected = s_total[0] + min(s_total[1], need_eq);
    for (int i = static_cast<int>(selected) + threadIdx.x; i < static_cast<int>(k); i += kThreads) out[i] = -1;
  }
  // Leave the row's workspace zero (topk.cuh: zero between calls, so a decode step needs no memset): the last block
  // of the row to arrive here clears it; every block's reads of the workspace come before its arrival.
  __shared__ bool s_last;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    s_last = atomicAdd(counter, 1u) == target + gridDim.x - 1;
  }
  __syncthreads();
  if (s_last) {
    __threadfence();
    for (int64_t i = threadIdx.x; i < row_stride; i += kThreads) ws_row[i] = 0u;
  }
}

int sm_count_topk() {
  static int cached = 0;
  if (cached == 0) {
    int dev = 0;
    GLANCE_CUDA_CHECK(cudaGetDevice(&dev));
    GLANCE_CUDA_CHECK(cudaDeviceGetAttribute(&cached, cudaDevAttrMultiProcessorCount, dev));
  }
  return cached;
}

// GLANCE_TOPK_SINGLE=0 disables the single-kernel path (for benchmarking both).
bool use_single_kernel(int64_t T, int n_chunks) {
  if (const char* e = std::getenv("GLANCE_TOPK_SINGLE"))
    if (e[0] == '0') return false;
  return T * n_chunks <= sm_count_topk();
}

void check_args(const char* op, int64_t ld_scores, int64_t T, int64_t S, int64_t k) {
  if (T < 0 || S < 0 || k < 0) invalid_argument(op, "negative size");
  if (ld_scores < S) invalid_argument(op, "ld_scores is less than S");
  if (S > (int64_t(1) << 30) || k > (int64_t(1) << 30)) invalid_argument(op, "S and k must be below 2^30");
}

void check_workspace(const char* op, int64_t T, int64_t S, void* workspace, size_t workspace_bytes) {
  const size_t need = topk_workspace_bytes(T, S);
  if (workspace == nullptr || workspace_bytes < need)
    invalid_argument(op, "workspace of " + std::to_string(workspace_bytes) + " bytes is too small (" +
                             std::to_string(need) + " needed)");
}

// The passes after level 1 (H1 already accumulated in the workspace).
void select_after_hist1(int32_t* idx, const float* scores, int64_t ld, int64_t T, int64_t S, int64_t k,
                        uint32_t* ws, cudaStream_t stream, bool run_hist1) {
  const int n_chunks = static_cast<int>((S + kChunk - 1) / kChunk);
  const int n_fine = static_cast<int>((S + kFineChunk - 1) / kFineChunk);
  const int64_t stride = row_words(n_fine);
  const int Si = static_cast<int>(S);
  const uint32_t ku = static_cast<uint32_t>(k);
  // The workspace is zero on entry (topk.cuh); the single kernel leaves it zero, the multi-kernel path clears it
  // after its last pass.
  const char* pt = std::getenv("GLANCE_TOPK_PER_THREAD");  // 16: the coarse cut only (benchmarks)
  if ((pt == nullptr || pt[0] != '1') && use_single_kernel(T, n_fine)) {
    const dim3 grid(n_fine, static_cast<unsigned>(T));
    if (run_hist1) launch_kernel("topk_single_kernel", topk_single_kernel<true, kFinePerThread>, grid, dim3(kThreads), 0, stream, idx, scores, ld, Si, ws, stride, n_fine, ku);
    else launch_kernel("topk_single_kernel", topk_single_kernel<false, kFinePerThread>, grid, dim3(kThreads), 0, stream, idx, scores, ld, Si, ws, stride, n_fine, ku);
    GLANCE_CUDA_CHECK_LAUNCH("topk_single_kernel");
    return;
  }
  if (use_single_kernel(T, n_chunks)) {
    const dim3 grid(n_chunks, static_cast<unsigned>(T));
    if (run_hist1) launch_kernel("topk_single_kernel", topk_single_kernel<true, kPerThread>, dim3(grid), dim3(kThreads), 0, stream, idx, scores, ld, Si, ws, stride, n_chunks, ku);
    else launch_kernel("topk_single_kernel", topk_single_kernel<false, kPerThread>, dim3(grid), dim3(kThreads), 0, stream, idx, scores, ld, Si, ws, stride, n_chunks, ku);
    GLANCE_CUDA_CHECK_LAUNCH("topk_single_kernel");
    return;
  }
  for (int64_t row0 = 0; row0 < T; row0 += 65535) {
    const dim3 grid(n_chunks, static_cast<unsigned>(std::min<int64_t>(65535, T - row0)));
    const int r0 = static_cast<int>(row0);
    if (run_hist1) {
      launch_kernel("topk_hist1_kernel", topk_hist1_kernel, dim3(grid), dim3(kThreads), 0, stream, scores, ld, Si, ws, stride, r0);
      GLANCE_CUDA_CHECK_LAUNCH("topk_hist1_kernel");
    }
    launch_kernel("topk_hist2_kernel", topk_hist2_kernel, dim3(grid), dim3(kThreads), 0, stream, scores, ld, Si, ws, stride, r0, ku);
    GLANCE_CUDA_CHECK_LAUNCH("topk_hist2_kernel");
    launch_kernel("topk_hist3_kernel", topk_hist3_kernel, dim3(grid), dim3(kThreads), 0, stream, scores, ld, Si, ws, stride, r0);
    GLANCE_CUDA_CHECK_LAUNCH("topk_hist3_kernel");
    launch_kernel("topk_count_kernel", topk_count_kernel, dim3(grid), dim3(kThreads), 0, stream, scores, ld, Si, ws, stride, r0);
    GLANCE_CUDA_CHECK_LAUNCH("topk_count_kernel");
    launch_kernel("topk_emit_kernel", topk_emit_kernel, dim3(grid), dim3(kThreads), 0, stream, idx, scores, ld, Si, ws, stride, r0, n_chunks,
                                                    static_cast<int>(k));
    GLANCE_CUDA_CHECK_LAUNCH("topk_emit_kernel");
  }
  GLANCE_CUDA_CHECK(cudaMemsetAsync(ws, 0, topk_workspace_bytes(T, S), stream));
}

}  // namespace

size_t topk_workspace_bytes(int64_t T, int64_t S) {
  const int64_t n_chunks = (S + kFineChunk - 1) / kFineChunk;
  return static_cast<size_t>(T > 0 ? T : 0) * static_cast<size_t>(row_words(n_chunks)) * sizeof(uint32_t);
}

int64_t topk_hist1_row_stride(int64_t S) { return row_words((S + kFineChunk - 1) / kFineChunk); }

void topk_prepare_fused_hist1(void* workspace, size_t workspace_bytes, int64_t T, int64_t S, cudaStream_t stream) {
  check_workspace("topk_prepare_fused_hist1", T, S, workspace, workspace_bytes);
  if (T > 0 && S > 0) GLANCE_CUDA_CHECK(cudaMemsetAsync(workspace, 0, topk_workspace_bytes(T, S), stream));
}

void topk_after_fused_hist1(int32_t* idx, const float* scores, int64_t ld_scores, int64_t T, int64_t S, int64_t k,
                            void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const char* op = "topk_after_fused_hist1";
  check_args(op, ld_scores, T, S, k);
  if (T == 0 || k == 0) return;
  if (S == 0) {
    GLANCE_CUDA_CHECK(cudaMemsetAsync(idx, 0xFF, static_cast<size_t>(T * k) * sizeof(int32_t), stream));
    return;
  }
  check_workspace(op, T, S, workspace, workspace_bytes);
  select_after_hist1(idx, scores, ld_scores, T, S, k, static_cast<uint32_t*>(workspace), stream, false);
}

void topk(int32_t* idx, const float* scores, int64_t ld_scores, int64_t T, int64_t S, int64_t k, void* workspace,
          size_t workspace_bytes, cudaStream_t stream) {
  const char* op = "topk";
  check_args(op, ld_scores, T, S, k);
  if (T == 0 || k == 0) return;
  if (S == 0) {
    GLANCE_CUDA_CHECK(cudaMemsetAsync(idx, 0xFF, static_cast<size_t>(T * k) * sizeof(int32_t), stream));  // all -1
    return;
  }
  check_workspace(op, T, S, workspace, workspace_bytes);
  select_after_hist1(idx, scores, ld_scores, T, S, k, static_cast<uint32_t*>(workspace), stream, true);
}

}  // namespace cuda
}  // namespace glance
