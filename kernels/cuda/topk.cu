// Exact multi-block radix top-k (contract and design in topk.cuh).
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "common.cuh"
#include "topk.cuh"

namespace glance {
namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = 16;
constexpr int kChunk = kThreads * kPerThread;  // columns per block
constexpr int kBins1 = 2048, kBins2 = 2048, kBins3 = 1024;
// Per-row workspace, in uint32 words: H1 | H2 | H3 | state (threshold, need_eq) | per-chunk (above, equal).
constexpr int kOffH2 = kBins1, kOffH3 = kBins1 + kBins2, kOffState = kBins1 + kBins2 + kBins3,
              kOffCounts = kOffState + 4;

inline int64_t row_words(int64_t n_chunks) { return kOffCounts + 2 * n_chunks; }

// Order-preserving key of a score (as kernels/cpu/topk.cc): larger float -> larger key; -0 -> +0; non-finite -> 0,
// which no finite score has (finite keys are >= 0x00800000).
__device__ __forceinline__ uint32_t score_key(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7f800000u) == 0x7f800000u) return 0;
  if (u == 0x80000000u) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

using Scan = cub::BlockScan<uint32_t, kThreads>;

struct Resolved {
  uint32_t bucket, need, total;
};

// Bucket of hist[0, NB) (larger bucket = larger keys) where the count from the top reaches `need` (>= 1), and how
// many keys of that bucket are still needed. total = all keys counted. Block-wide; every thread gets the answer.
// If total < need, bucket is 0 and need is unchanged (callers handle that case before).
template <int NB>
__device__ Resolved resolve(const uint32_t* hist, uint32_t need, typename Scan::TempStorage& tmp, uint32_t* s_out) {
  constexpr int kPer = NB / kThreads;
  const int first = NB - 1 - threadIdx.x * kPer;  // this thread's bins: first, first-1, ..., first-kPer+1
  uint32_t h[kPer];
  uint32_t sum = 0;
#pragma unroll
  for (int j = 0; j < kPer; j++) {
    h[j] = hist[first - j];
    sum += h[j];
  }
  uint32_t above, total;
  Scan(tmp).ExclusiveSum(sum, above, total);
  if (threadIdx.x == 0) {
    s_out[0] = 0;
    s_out[1] = need;
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j < kPer; j++) {
    if (above < need && above + h[j] >= need) {
      s_out[0] = static_cast<uint32_t>(first - j);
      s_out[1] = need - above;
    }
    above += h[j];
  }
  __syncthreads();
  Resolved r{s_out[0], s_out[1], total};
  __syncthreads();  // s_out and tmp are reused by the caller
  return r;
}

struct Threshold {
  bool all_finite;  // fewer than k finite keys (or exactly k): take every finite key
  uint32_t prefix;  // the levels resolved so far, as the top bits of the threshold
  uint32_t need;    // keys still needed from the current bucket
};

// Resolves `levels` (1..3) levels of row's histograms.
__device__ Threshold resolve_levels(const uint32_t* ws_row, uint32_t k, int levels, typename Scan::TempStorage& tmp,
                                    uint32_t* s_out) {
  Threshold th{false, 0, k};
  const Resolved r1 = resolve<kBins1>(ws_row, k, tmp, s_out);
  if (r1.total <= k) {
    th.all_finite = true;
    return th;
  }
  th.prefix = r1.bucket;
  th.need = r1.need;
  if (levels >= 2) {
    const Resolved r2 = resolve<kBins2>(ws_row + kOffH2, th.need, tmp, s_out);
    th.prefix = th.prefix << 11 | r2.bucket;
    th.need = r2.need;
  }
  if (levels >= 3) {
    const Resolved r3 = resolve<kBins3>(ws_row + kOffH3, th.need, tmp, s_out);
    th.prefix = th.prefix << 10 | r3.bucket;
    th.need = r3.need;
  }
  return th;
}

// Level-1 histogram (top 11 bits) of one chunk, added into the row's H1.
__global__ void __launch_bounds__(kThreads) topk_hist1_kernel(const float* __restrict__ scores, int64_t ld, int S,
                                                               uint32_t* __restrict__ ws, int64_t row_stride,
                                                               int row0) {
  __shared__ uint32_t h[kBins1];
  const int64_t row = row0 + blockIdx.y;
  for (int b = threadIdx.x; b < kBins1; b += kThreads) h[b] = 0;
  __syncthreads();
  const float* r = scores + row * ld;
  const int base = blockIdx.x * kChunk;
#pragma unroll 4
  for (int j = 0; j < kPerThread; j++) {
    const int s = base + j * kThreads + threadIdx.x;
    if (s < S) {
      const uint32_t key = score_key(r[s]);
      if (key) atomicAdd(&h[key >> 21], 1u);
    }
  }
  __syncthreads();
  uint32_t* H1 = ws + row * row_stride;
  for (int b = threadIdx.x; b < kBins1; b += kThreads)
    if (h[b]) atomicAdd(&H1[b], h[b]);
}

// Level-2 (LEVEL = 2: bits 20..10 of keys in the level-1 bucket) or level-3 (bits 9..0 of keys matching the top 22
// bits) histogram of one chunk.
template <int LEVEL>
__global__ void __launch_bounds__(kThreads) topk_hist_kernel(const float* __restrict__ scores, int64_t ld, int S,
                                                              uint32_t* __restrict__ ws, int64_t row_stride, int row0,
                                                              uint32_t k) {
  constexpr int kBins = LEVEL == 2 ? kBins2 : kBins3;
  constexpr int kShift = LEVEL == 2 ? 10 : 0;   // digit position
  constexpr int kPrefixShift = LEVEL == 2 ? 21 : 10;
  __shared__ typename Scan::TempStorage tmp;
  __shared__ uint32_t s_out[2];
  __shared__ uint32_t h[kBins];
  const int64_t row = row0 + blockIdx.y;
  uint32_t* ws_row = ws + row * row_stride;
  const Threshold th = resolve_levels(ws_row, k, LEVEL - 1, tmp, s_out);
  if (th.all_finite) return;
  for (int b = threadIdx.x; b < kBins; b += kThreads) h[b] = 0;
  __syncthreads();
  const float* r = scores + row * ld;
  const int base = blockIdx.x * kChunk;
#pragma unroll 4
  for (int j = 0; j < kPerThread; j++) {
    const int s = base + j * kThreads + threadIdx.x;
    if (s < S) {
      const uint32_t key = score_key(r[s]);
      if (key && (key >> kPrefixShift) == th.prefix) atomicAdd(&h[(key >> kShift) & (kBins - 1)], 1u);
    }
  }
  __syncthreads();
  uint32_t* H = ws_row + (LEVEL == 2 ? kOffH2 : kOffH3);
  for (int b = threadIdx.x; b < kBins; b += kThreads)
    if (h[b]) atomicAdd(&H[b], h[b]);
}

// Per chunk: how many keys are above the threshold and how many equal it. Block (0, row) also stores the threshold.
__global__ void __launch_bounds__(kThreads) topk_count_kernel(const float* __restrict__ scores, int64_t ld, int S,
                                                               uint32_t* __restrict__ ws, int64_t row_stride,
                                                               int row0, uint32_t k) {
  __shared__ typename Scan::TempStorage tmp;
  __shared__ uint32_t s_out[2];
  const int64_t row = row0 + blockIdx.y;
  uint32_t* ws_row = ws + row * row_stride;
  const Threshold th = resolve_levels(ws_row, k, 3, tmp, s_out);
  // all finite: threshold key 0 (non-finite), every finite key is above it and no equal key is taken
  const uint32_t thr = th.all_finite ? 0u : th.prefix;
  const uint32_t need_eq = th.all_finite ? 0u : th.need;
  const float* r = scores + row * ld;
  const int base = blockIdx.x * kChunk;
  uint32_t above = 0, equal = 0;
#pragma unroll 4
  for (int j = 0; j < kPerThread; j++) {
    const int s = base + j * kThreads + threadIdx.x;
    if (s < S) {
      const uint32_t key = score_key(r[s]);
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
      ws_row[kOffState] = thr;
      ws_row[kOffState + 1] = need_eq;
    }
  }
}

// Writes each chunk's selected columns in column order at the offset the earlier chunks leave; chunk 0 pads the row.
__global__ void __launch_bounds__(kThreads) topk_emit_kernel(int32_t* __restrict__ idx, const float* __restrict__ scores,
                                                              int64_t ld, int S, const uint32_t* __restrict__ ws,
                                                              int64_t row_stride, int row0, int n_chunks, int k) {
  __shared__ typename Scan::TempStorage tmp;
  __shared__ uint32_t s_before[2], s_total[2];
  const int64_t row = row0 + blockIdx.y;
  const uint32_t* ws_row = ws + row * row_stride;
  const uint32_t thr = ws_row[kOffState], need_eq = ws_row[kOffState + 1];
  const int chunk = blockIdx.x;
  if (threadIdx.x < 32) {  // sums over the earlier chunks and over all chunks (one warp)
    uint32_t a_before = 0, e_before = 0, a_all = 0, e_all = 0;
    for (int c = threadIdx.x; c < n_chunks; c += 32) {
      const uint32_t a = ws_row[kOffCounts + 2 * c], e = ws_row[kOffCounts + 2 * c + 1];
      if (c < chunk) {
        a_before += a;
        e_before += e;
      }
      a_all += a;
      e_all += e;
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
    keys[j] = s < S ? score_key(r[s]) : 0u;
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

}  // namespace

size_t topk_workspace_bytes(int64_t T, int64_t S) {
  const int64_t n_chunks = (S + kChunk - 1) / kChunk;
  return static_cast<size_t>(T > 0 ? T : 0) * static_cast<size_t>(row_words(n_chunks)) * sizeof(uint32_t);
}

void topk(int32_t* idx, const float* scores, int64_t ld_scores, int64_t T, int64_t S, int64_t k, void* workspace,
          size_t workspace_bytes, cudaStream_t stream) {
  const char* op = "topk";
  if (T < 0 || S < 0 || k < 0) invalid_argument(op, "negative size");
  if (ld_scores < S) invalid_argument(op, "ld_scores is less than S");
  if (S > (int64_t(1) << 30) || k > (int64_t(1) << 30)) invalid_argument(op, "S and k must be below 2^30");
  if (T == 0 || k == 0) return;
  if (S == 0) {
    GLANCE_CUDA_CHECK(cudaMemsetAsync(idx, 0xFF, static_cast<size_t>(T * k) * sizeof(int32_t), stream));  // all -1
    return;
  }
  const size_t need = topk_workspace_bytes(T, S);
  if (workspace == nullptr || workspace_bytes < need)
    invalid_argument(op, "workspace of " + std::to_string(workspace_bytes) + " bytes is too small (" +
                             std::to_string(need) + " needed)");
  GLANCE_CUDA_CHECK(cudaMemsetAsync(workspace, 0, need, stream));
  const int n_chunks = static_cast<int>((S + kChunk - 1) / kChunk);
  const int64_t stride = row_words(n_chunks);
  uint32_t* ws = static_cast<uint32_t*>(workspace);
  const int Si = static_cast<int>(S);
  const uint32_t ku = static_cast<uint32_t>(k);
  for (int64_t row0 = 0; row0 < T; row0 += 65535) {
    const dim3 grid(n_chunks, static_cast<unsigned>(std::min<int64_t>(65535, T - row0)));
    const int r0 = static_cast<int>(row0);
    topk_hist1_kernel<<<grid, kThreads, 0, stream>>>(scores, ld_scores, Si, ws, stride, r0);
    GLANCE_CUDA_CHECK_LAUNCH("topk_hist1_kernel");
    topk_hist_kernel<2><<<grid, kThreads, 0, stream>>>(scores, ld_scores, Si, ws, stride, r0, ku);
    GLANCE_CUDA_CHECK_LAUNCH("topk_hist_kernel<2>");
    topk_hist_kernel<3><<<grid, kThreads, 0, stream>>>(scores, ld_scores, Si, ws, stride, r0, ku);
    GLANCE_CUDA_CHECK_LAUNCH("topk_hist_kernel<3>");
    topk_count_kernel<<<grid, kThreads, 0, stream>>>(scores, ld_scores, Si, ws, stride, r0, ku);
    GLANCE_CUDA_CHECK_LAUNCH("topk_count_kernel");
    topk_emit_kernel<<<grid, kThreads, 0, stream>>>(idx, scores, ld_scores, Si, ws, stride, r0, n_chunks,
                                                    static_cast<int>(k));
    GLANCE_CUDA_CHECK_LAUNCH("topk_emit_kernel");
  }
}

}  // namespace cuda
}  // namespace glance
