// Exact top-k per row with a radix select.
//
// Every finite score maps to a 32-bit key that orders like the float (sign-magnitude flipped to unsigned
// order, -0 folded onto +0); non-finite scores get key 0, which no finite score has, and are never selected.
// The k-th largest key (the threshold) is found 11, 11 and 10 bits at a time: a histogram of the candidates'
// next bits picks the bucket where the count from the top reaches k; candidates in higher buckets are
// selected, those in that bucket go on to the next level. That is O(S) per row (three passes over the row, then
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

// Per-thread scratch, kept between calls (a decode step calls top-k once per layer).
struct TopkScratch {
  std::vector<uint32_t> keys;
  std::vector<uint64_t> cand, next;  // (key << 32 | index), contiguous so later levels never gather
};

void topk_row(int32_t* idx, const float* scores, int64_t S, int64_t k, TopkScratch& sc) {
  if (static_cast<int64_t>(sc.keys.size()) < S) sc.keys.resize(static_cast<size_t>(S));
  uint32_t* keys = sc.keys.data();
  // Level 1 on the top 11 bits (sign, exponent, 2 mantissa bits): fine enough that the threshold bucket is
  // usually a small fraction of the row.
  uint32_t hist[2048];
  std::memset(hist, 0, sizeof hist);
  int64_t finite = 0;
  for (int64_t s = 0; s < S; s++) {
    const uint32_t key = score_key(scores[s]);
    keys[s] = key;
    if (key != 0) {
      finite++;
      hist[key >> 21]++;
    }
  }
  int64_t n = 0;
  if (finite <= k) {
    for (int64_t s = 0; s < S; s++)
      if (keys[s] != 0) idx[n++] = static_cast<int32_t>(s);
    for (int64_t i = n; i < k; i++) idx[i] = -1;
    return;
  }
  // Radix select of the k-th largest key (the threshold): at each level a histogram of the candidates' next
  // bits picks the bucket where the count from the top reaches `need`; keys in higher buckets are taken, those
  // in that bucket go on. After the levels (11, 11, 10 bits) the threshold key is known, with `need` = how many
  // keys equal to it are taken (the lowest-indexed ones).
  int64_t need = k;
  auto pick = [&](const uint32_t* h, int buckets) {
    int b = buckets - 1;
    int64_t above = 0;
    for (; b > 0; b--) {
      if (above + h[b] >= need) break;
      above += h[b];
    }
    need -= above;
    return static_cast<uint32_t>(b);
  };
  const uint32_t b1 = pick(hist, 2048);
  sc.cand.clear();
  for (int64_t s = 0; s < S; s++)
    if (keys[s] != 0 && (keys[s] >> 21) == b1) sc.cand.push_back((static_cast<uint64_t>(keys[s]) << 32) | static_cast<uint32_t>(s));
  uint32_t threshold = b1 << 21;
  const int shifts[2] = {10, 0};
  const int bits[2] = {11, 10};
  for (int lv = 0; lv < 2; lv++) {
    const uint32_t mask = (1u << bits[lv]) - 1;
    std::memset(hist, 0, sizeof hist);
    for (uint64_t e : sc.cand) hist[(static_cast<uint32_t>(e >> 32) >> shifts[lv]) & mask]++;
    const uint32_t b = pick(hist, 1 << bits[lv]);
    threshold |= b << shifts[lv];
    sc.next.clear();
    for (uint64_t e : sc.cand)
      if (((static_cast<uint32_t>(e >> 32) >> shifts[lv]) & mask) == b) sc.next.push_back(e);
    std::swap(sc.cand, sc.next);
  }
  // One pass in position order: every key above the threshold, and the first `need` equal to it.
  int64_t ties = 0;
  for (int64_t s = 0; s < S; s++) {
    const uint32_t key = keys[s];
    if (key > threshold || (key == threshold && ties++ < need)) idx[n++] = static_cast<int32_t>(s);
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
        static thread_local TopkScratch sc;
        for (int64_t t = b; t < e; t++) topk_row(idx + t * k, scores + t * S, S, k, sc);
      },
      threads_for(T * (S + 1), 1 << 14));
}

}  // namespace glance
