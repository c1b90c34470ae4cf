// Exact top-k per row with a radix select.
//
// Every finite score maps to a 32-bit key that orders like the float (sign-magnitude flipped to unsigned
// order, -0 folded onto +0); non-finite scores get key 0, which no finite score has, and are never selected.
// The k-th largest key (the threshold) is found 8 bits at a time: a 256-bucket histogram of the candidates'
// current byte picks the bucket where the count from the top reaches k; candidates in higher buckets are
// selected, those in that bucket go on to the next byte. That is O(S) per row (two passes over the row, then
// passes over the shrinking candidate list), and exact. The row takes every key above the threshold and the
// lowest-indexed keys equal to it, and sorts those k by (key descending, index ascending) with a stable LSD
// radix sort (3 passes of 11 bits); equal keys are collected in index order, so stability breaks the ties.
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

// Stable sort of v by the high 32 bits, descending (entries: key << 32 | index).
void radix_sort_desc(std::vector<uint64_t>& v, std::vector<uint64_t>& tmp) {
  const size_t n = v.size();
  if (n < 2) return;
  if (n <= 64) {  // insertion sort: stable, cheap for short rows
    for (size_t i = 1; i < n; i++) {
      const uint64_t e = v[i];
      size_t j = i;
      for (; j > 0 && (v[j - 1] >> 32) < (e >> 32); j--) v[j] = v[j - 1];
      v[j] = e;
    }
    return;
  }
  tmp.resize(n);
  constexpr int kBits[3] = {11, 11, 10};
  uint32_t hist[3][2048];
  std::memset(hist, 0, sizeof hist);
  for (size_t i = 0; i < n; i++) {
    const uint32_t d = ~static_cast<uint32_t>(v[i] >> 32);  // ascending in ~key = descending in key
    hist[0][d & 2047]++;
    hist[1][(d >> 11) & 2047]++;
    hist[2][d >> 22]++;
  }
  uint64_t* src = v.data();
  uint64_t* dst = tmp.data();
  int shift = 0;
  for (int p = 0; p < 3; p++) {
    const uint32_t buckets = 1u << kBits[p];
    if (hist[p][(~static_cast<uint32_t>(src[0] >> 32) >> shift) & (buckets - 1)] == n) {  // one bucket: skip
      shift += kBits[p];
      continue;
    }
    uint32_t sum = 0;
    for (uint32_t b = 0; b < buckets; b++) {
      const uint32_t c = hist[p][b];
      hist[p][b] = sum;
      sum += c;
    }
    for (size_t i = 0; i < n; i++) {
      const uint32_t d = (~static_cast<uint32_t>(src[i] >> 32) >> shift) & (buckets - 1);
      dst[hist[p][d]++] = src[i];
    }
    std::swap(src, dst);
    shift += kBits[p];
  }
  if (src != v.data()) std::memcpy(v.data(), src, n * sizeof(uint64_t));
}

void topk_row(int32_t* idx, const float* scores, int64_t S, int64_t k, std::vector<uint32_t>& keys,
              std::vector<int32_t>& cand, std::vector<uint64_t>& sel, std::vector<uint64_t>& tmp) {
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
  sel.clear();
  auto entry = [&](int64_t s) { return (static_cast<uint64_t>(keys[s]) << 32) | static_cast<uint32_t>(s); };
  if (finite <= k) {
    for (int64_t s = 0; s < S; s++)
      if (keys[s] != 0) sel.push_back(entry(s));
  } else {
    // Radix select of the k-th largest key. At each level, candidates in buckets above the chosen one are
    // selected outright, those in it go on to the next byte. Equal keys always travel together, in index
    // order, so the lowest indices win the ties at the threshold.
    int64_t need = k;  // how many still to take from the current candidates
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
      const uint32_t ub = static_cast<uint32_t>(b);
      if (shift == 24) {
        for (int64_t s = 0; s < S; s++) {
          const uint32_t key = keys[s];
          if (key == 0) continue;
          const uint32_t d = key >> 24;
          if (d > ub) sel.push_back(entry(s));
          else if (d == ub) cand.push_back(static_cast<int32_t>(s));
        }
      } else {
        size_t m = 0;
        for (int32_t s : cand) {
          const uint32_t d = (keys[s] >> shift) & 0xffu;
          if (d > ub) sel.push_back(entry(s));
          else if (d == ub) cand[m++] = s;
        }
        cand.resize(m);
      }
    }
    // cand now holds the keys equal to the threshold, in index order; take the first `need`.
    for (int64_t i = 0; i < need; i++) sel.push_back(entry(cand[i]));
  }
  radix_sort_desc(sel, tmp);
  const int64_t n = static_cast<int64_t>(sel.size());
  for (int64_t i = 0; i < n; i++) idx[i] = static_cast<int32_t>(sel[i]);
  for (int64_t i = n; i < k; i++) idx[i] = -1;
}

}  // namespace

// idx[t, :] = indices of the k largest finite scores[t, :], descending, ties by lower index, -1 padded.
void topk(int32_t* idx, const float* scores, int64_t T, int64_t S, int64_t k) {
  if (T <= 0 || k <= 0) return;
  parallel_for(
      T,
      [&](int64_t b, int64_t e) {
        std::vector<uint32_t> keys;
        std::vector<int32_t> cand;
        std::vector<uint64_t> sel, tmp;
        for (int64_t t = b; t < e; t++) topk_row(idx + t * k, scores + t * S, S, k, keys, cand, sel, tmp);
      },
      threads_for(T * (S + 1), 1 << 14));
}

}  // namespace glance
