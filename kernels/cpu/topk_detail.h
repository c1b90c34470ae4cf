// The pieces of the exact top-k (topk.cc) that a producer of scores can fuse with (indexer_topk.cc): the order key
// of a score, the level-1 histogram of a range of a row, and the selection of one row from its keys cut into
// parts, with the scans split over threads. Internal to kernels/cpu.
#pragma once

#include <cstdint>
#include <cstring>

namespace glance {
namespace topk_detail {

// Level 1 of the radix select: the top 11 bits of the key (sign, exponent, 2 mantissa bits).
constexpr int kHist1Shift = 21;
constexpr int kHist1Buckets = 1 << (32 - kHist1Shift);

// A 32-bit key that orders like the score: sign-magnitude flipped to unsigned order, -0 folded onto +0.
// Non-finite scores get 0, which no finite score has: they are never selected.
inline uint32_t score_key(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return 0;  // inf / nan
  if (u == 0x80000000u) u = 0;                      // -0 -> +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// keys[i] = score_key(scores[i]) for i < n, and hist[keys[i] >> kHist1Shift] += 1 for every finite one (hist is
// added to, not cleared).
void keys_and_hist(uint32_t* keys, uint32_t* hist, const float* scores, int64_t n);

// The same in two steps, for a producer that hands over a row in short chunks (the fused indexer: 384 scores at a
// time): the counts go to four interleaved histograms hist4 [4][kHist1Buckets] (cleared by the caller, added to
// across calls), so that back-to-back increments of one bucket (a row's scores crowd into a few) do not wait on
// each other; fold_hist4 then adds their finite keys' counts to hist [kHist1Buckets]. keys_and_hist uses the pair
// for long ranges.
void keys_and_hist4(uint32_t* keys, uint32_t* hist4, const float* scores, int64_t n);
void fold_hist4(uint32_t* hist, const uint32_t* hist4);

// One row's selection from its keys [0, n) cut into P contiguous parts: part p is [bounds[p], bounds[p + 1]) with
// its level-1 histogram at hist + p * kHist1Buckets (as keys_and_hist leaves it). idx[0, k) gets the positions of
// the k largest keys in ascending position order, ties at the threshold to the lower positions, -1 padded when
// fewer than k keys are non-zero. The scans of the parts run on up to P threads (parallel_for; inline when called
// from inside a job).
void select_row(int32_t* idx, int64_t k, const uint32_t* keys, const int64_t* bounds, const uint32_t* hist, int P);

}  // namespace topk_detail
}  // namespace glance
