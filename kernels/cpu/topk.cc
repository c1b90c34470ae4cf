// Exact top-k per row with a radix select.
//
// Every finite score maps to a 32-bit key that orders like the float (sign-magnitude flipped to unsigned
// order, -0 folded onto +0); non-finite scores get key 0, which no finite score has, and are never selected.
// The k-th largest key (the threshold) is found 8 bits at a time: a 256-bucket histogram of the candidates'
// current byte picks the bucket where the count from the top reaches k; candidates in higher buckets are
// selected, those in that bucket go on to the next byte. That is O(S) per row (three passes over the row, then
// passes over the shrinking candidate list), and exact. The row takes every key above the threshold and the
// lowest-indexed keys equal to it, emitted in position order: no sort, and the attention that gathers those
// rows next walks the cache forwards (DeepSeek's and vLLM's top-k are unsorted too).
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels.h"
#include "thread_pool.h"

namespace glance {

namespace {

inline uint32_t score_key(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return 0;  // inf / nan
  if (u == 0x80000000u) u = 0;                      // -0 -> +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

void topk_row(int32_t* idx, const float* scores, int64_t S, int64_t k, std::vector<uint32_t>& keys,
              std::vector<int32_t>& cand) {
  keys.resize(static_cast<size_t>(S));
  int64_t finite = 0;
  uint32_t hist[256];
  std::memset(hist, 0, sizeof hist);
  for (int64_t s = 0; s < S; s++) {
    const uint32_t key = score_key(scores[s]);
    keys[s] = key;
    if (key != 0) {
      finite++;
      hist[key >> 24]++;
    }
  }
  int64_t n = 0;
  if (finite <= k) {
    for (int64_t s = 0; s < S; s++)
      if (keys[s] != 0) idx[n++] = static_cast<int32_t>(s);
  } else {
    // Radix select of the k-th largest key (the threshold), one byte per level: a histogram of the candidates'
    // current byte picks the bucket where the count from the top reaches k; keys in higher buckets are taken,
    // those in that bucket go on to the next byte. After four levels the threshold key is known, with `need`
    // = how many keys equal to it are taken (the lowest-indexed ones).
    int64_t need = k;
    uint32_t threshold = 0;
    cand.clear();
    for (int shift = 24; shift >= 0; shift -= 8) {
      if (shift != 24) {
        std::memset(hist, 0, sizeof hist);
        for (int32_t s : cand) hist[(keys[s] >> shift) & 0xffu]++;
      }
      int b = 255;
      int64_t above = 0;
      for (; b > 0; b--) {
        if (above + hist[b] >= need) break;
        above += hist[b];
      }
      need -= above;
      threshold |= static_cast<uint32_t>(b) << shift;
      const uint32_t ub = static_cast<uint32_t>(b);
      if (shift == 24) {
        for (int64_t s = 0; s < S; s++)
          if (keys[s] != 0 && (keys[s] >> 24) == ub) cand.push_back(static_cast<int32_t>(s));
      } else {
        size_t m = 0;
        for (int32_t s : cand)
          if (((keys[s] >> shift) & 0xffu) == ub) cand[m++] = s;
        cand.resize(m);
      }
    }
    // One pass in position order: every key above the threshold, and the first `need` equal to it.
    int64_t ties = 0;
    for (int64_t s = 0; s < S; s++) {
      const uint32_t key = keys[s];
      if (key > threshold || (key == threshold && ties++ < need)) idx[n++] = static_cast<int32_t>(s);
    }
  }
  for (int64_t i = n; i < k; i++) idx[i] = -1;
}

}  // namespace

// idx[t, :] = indices of the k largest finite scores[t, :], in ascending index order, ties by lower index,
// -1 padded.
void topk(int32_t* idx, const float* scores, int64_t T, int64_t S, int64_t k) {
  if (T <= 0 || k <= 0) return;
  parallel_for(
      T,
      [&](int64_t b, int64_t e) {
        std::vector<uint32_t> keys;
        std::vector<int32_t> cand;
        for (int64_t t = b; t < e; t++) topk_row(idx + t * k, scores + t * S, S, k, keys, cand);
      },
      threads_for(T * (S + 1), 1 << 14));
}

}  // namespace glance
