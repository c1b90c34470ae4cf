// The lightning indexer's token selection in one op: FP8 scores (indexer_fp8.cc) then exact top-k (topk.cc), the
// same contract as the CUDA indexer_topk (kernels/cuda/indexer.cuh).
//
// Decode (one query): the keys [0, position] are cut into one contiguous part per thread; a part scores its key
// chunks and turns each chunk's scores into top-k keys and level-1 histogram counts while they are still in L1, so
// the selection starts from finished histograms and never rereads the scores (topk_detail::select_row then finishes
// it with its scans split over the same parts). Several queries (prefill, T > 1): blocks of queries are scored into a
// scratch [rows, keys attended by the block] and selected row by row, rows in parallel.
#include <algorithm>
#include <vector>

#include "indexer_fp8_detail.h"
#include "kernels.h"
#include "thread_pool.h"
#include "topk_detail.h"

namespace glance {

namespace {

using topk_detail::kHist1Buckets;

constexpr int64_t kPrefillRows = 64;  // queries scored before their selection (bounds the scratch to 64 x S floats)
constexpr int64_t kSpan = 8 * kKeyChunk;  // keys scored before their histogram counts (1.5 KB of scores: still in L1)

struct DecodeScratch {
  std::vector<float> scores;
  std::vector<uint32_t> keys;
  std::vector<uint32_t> hist;   // [P][kHist1Buckets]: each part's level-1 histogram, as select_row reads it
  std::vector<uint32_t> hist4;  // [P][4][kHist1Buckets]: the interleaved counts of keys_and_hist4
  std::vector<int64_t> bounds;
};

void select_one_query(int32_t* idx, const uint8_t* q, const float* weights, const uint8_t* keys,
                      const float* key_scales, int64_t t, int64_t S, int64_t Hi, int64_t D, const int32_t* positions,
                      int64_t k) {
  static thread_local DecodeScratch tls;
  DecodeScratch& sc = tls;  // the workers use this thread's scratch
  const Fp8IndexerBlock block(q, weights, keys, key_scales, t, 1, S, Hi, D, positions);
  const int64_t n = block.need();  // keys past it are -inf: never selected
  if (n == 0) {
    std::fill(idx, idx + k, -1);
    return;
  }
  const int64_t chunks = (n + kKeyChunk - 1) / kKeyChunk;
  if (sc.keys.size() < static_cast<size_t>(n)) sc.keys.resize(static_cast<size_t>(n));
  // score_chunk writes whole chunks (-inf past the position)
  if (sc.scores.size() < static_cast<size_t>(chunks * kKeyChunk)) sc.scores.resize(static_cast<size_t>(chunks * kKeyChunk));
  const int P = static_cast<int>(std::min<int64_t>(threads_for(block.work(), 1 << 15), chunks));
  sc.hist.assign(static_cast<size_t>(P) * kHist1Buckets, 0);
  sc.hist4.resize(static_cast<size_t>(P) * 4 * kHist1Buckets);
  sc.bounds.resize(static_cast<size_t>(P) + 1);
  for (int p = 0; p <= P; p++) sc.bounds[p] = std::min(n, chunks * p / P * kKeyChunk);
  float* scores = sc.scores.data();
  uint32_t* keyv = sc.keys.data();
  const int64_t* bounds = sc.bounds.data();
  uint32_t* hist = sc.hist.data();
  uint32_t* hist4 = sc.hist4.data();
  parallel_for(
      P,
      [&](int64_t b, int64_t e) {
        for (int64_t p = b; p < e; p++) {
          uint32_t* h4 = hist4 + p * 4 * kHist1Buckets;
          std::fill(h4, h4 + 4 * kHist1Buckets, 0u);
          for (int64_t s0 = bounds[p]; s0 < bounds[p + 1]; s0 += kSpan) {
            const int64_t s1 = std::min(s0 + kSpan, bounds[p + 1]);
            block.score_keys(s0, s1, scores);
            topk_detail::keys_and_hist4(keyv + s0, h4, scores + s0, s1 - s0);
          }
          topk_detail::fold_hist4(hist + p * kHist1Buckets, h4);
        }
      },
      P);
  topk_detail::select_row(idx, k, keyv, bounds, hist, P);
}

}  // namespace

void indexer_topk(int32_t* idx, const uint8_t* q, const float* weights, const uint8_t* keys, const float* key_scales,
                  int64_t T, int64_t S, int64_t Hi, int64_t D, const int32_t* positions, int64_t k) {
  if (T <= 0 || k <= 0) return;
  if (T == 1) {
    select_one_query(idx, q, weights, keys, key_scales, 0, S, Hi, D, positions, k);
    return;
  }
  std::vector<float> scores;
  for (int64_t t0 = 0; t0 < T; t0 += kPrefillRows) {
    const int64_t rows = std::min(kPrefillRows, T - t0);
    // Keys past every position of the block are -inf for all of its rows: score and select over [0, width) only.
    int64_t width = 0;
    for (int64_t i = 0; i < rows; i++)
      width = std::max(width, std::min<int64_t>(S, std::max<int64_t>(0, static_cast<int64_t>(positions[t0 + i]) + 1)));
    if (width == 0) {
      std::fill(idx + t0 * k, idx + (t0 + rows) * k, -1);
      continue;
    }
    scores.resize(static_cast<size_t>(rows * width));
    indexer_scores_fp8(scores.data(), q + t0 * Hi * D, weights + t0 * Hi, keys, key_scales, rows, width, Hi, D,
                       positions + t0);
    topk(idx + t0 * k, scores.data(), rows, width, k);
  }
}

}  // namespace glance
