// Exact top-k per row with a radix select.
//
// Every finite score maps to a 32-bit key that orders like the float (sign-magnitude flipped to unsigned
// order, -0 folded onto +0); non-finite scores get key 0, which no finite score has, and are never selected.
// The k-th largest key (the threshold) is found 11, 11 and 10 bits at a time: a histogram of the candidates'
// next bits picks the bucket where the count from the top reaches k; candidates in higher buckets are
// selected, those in that bucket go on to the next level. That is O(S) per row, and exact. The row takes every
// key above the threshold and the lowest-indexed keys equal to it, emitted in position order: no sort, and the
// attention that gathers those rows next walks the cache forwards (DeepSeek's and vLLM's top-k are unsorted too).
//
// A row is cut into parts, one per thread when there are fewer rows than threads (the decode step has one row per
// layer): each part computes its keys and level-1 histogram, then, once the threshold bucket is known, collects its
// own keys above that bucket and its candidates in it; the later levels run on the (small) candidate list and the
// parts' selections are concatenated in position order. The result does not depend on the number of parts.
// The indexer fuses the first step into its scoring pass (indexer_topk.cc, through topk_detail.h).
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels.h"
#include "simd.h"
#include "thread_pool.h"
#include "topk_detail.h"

namespace glance {
namespace topk_detail {

namespace {

constexpr uint32_t kNegZero = 0x80000000u;

// keys + histogram, scalar: one histogram (clearing and folding four interleaved ones would not pay off for a
// short range handed over once).
void keys_and_hist_scalar(uint32_t* keys, uint32_t* hist, const float* scores, int64_t n) {
  for (int64_t s = 0; s < n; s++) {
    const uint32_t key = score_key(scores[s]);
    keys[s] = key;
    if (key != 0) hist[key >> kHist1Shift]++;
  }
}

// The four-histogram form (topk_detail.h): every key is counted, non-finite ones (key 0) in bucket 0, where no
// finite key lands (the smallest finite key, of the most negative float, is 0x00800000): fold_hist4 leaves it out.
void keys_and_hist4_scalar(uint32_t* keys, uint32_t* hist4, const float* scores, int64_t n) {
  for (int64_t s = 0; s < n; s++) {
    const uint32_t key = score_key(scores[s]);
    keys[s] = key;
    hist4[(s & 3) * kHist1Buckets + (key >> kHist1Shift)]++;
  }
}

#if GLANCE_X86
// score_key of 8 scores.
GLANCE_AVX2 inline __m256i score_keys8(const float* scores) {
  const __m256i expMask = _mm256_set1_epi32(0x7f800000);
  const __m256i signBit = _mm256_set1_epi32(static_cast<int>(kNegZero));
  const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(scores));
  const __m256i nonfinite = _mm256_cmpeq_epi32(_mm256_and_si256(u, expMask), expMask);
  const __m256i negZero = _mm256_cmpeq_epi32(u, signBit);
  __m256i key = _mm256_xor_si256(u, _mm256_or_si256(_mm256_srai_epi32(u, 31), signBit));
  key = _mm256_blendv_epi8(key, signBit, negZero);
  return _mm256_andnot_si256(nonfinite, key);
}

// 8 keys at a time, lane i's count to histogram i % 4.
GLANCE_AVX2 void keys_and_hist4_avx2(uint32_t* keys, uint32_t* hist4, const float* scores, int64_t n) {
  uint32_t* h0 = hist4;
  uint32_t* h1 = hist4 + kHist1Buckets;
  uint32_t* h2 = hist4 + 2 * kHist1Buckets;
  uint32_t* h3 = hist4 + 3 * kHist1Buckets;
  alignas(32) uint32_t b[8];
  int64_t s = 0;
  for (; s + 8 <= n; s += 8) {
    const __m256i key = score_keys8(scores + s);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(keys + s), key);
    _mm256_store_si256(reinterpret_cast<__m256i*>(b), _mm256_srli_epi32(key, kHist1Shift));
    h0[b[0]]++;
    h1[b[1]]++;
    h2[b[2]]++;
    h3[b[3]]++;
    h0[b[4]]++;
    h1[b[5]]++;
    h2[b[6]]++;
    h3[b[7]]++;
  }
  keys_and_hist4_scalar(keys + s, hist4, scores + s, n - s);
}
#endif

// What one part of a row contributes once the level-1 threshold bucket b1 is known: above[0, n_above) and
// cand[0, n_cand), both in position order (the vectors may be longer: the AVX-512 scan only grows them).
struct PartScratch {
  std::vector<int32_t> above;  // positions with a key in a bucket above b1: all selected
  std::vector<uint64_t> cand;  // (key << 32 | position) of the non-zero keys in bucket b1
  int64_t n_above = 0, n_cand = 0;
};

// Appends the positions of [s0, s1) above bucket b1 and the (key, position) pairs of its non-zero keys in b1.
void scan_range(const uint32_t* keys, int64_t s0, int64_t s1, uint32_t b1, PartScratch& ps) {
  for (int64_t s = s0; s < s1; s++) {
    const uint32_t key = keys[s];
    const uint32_t bk = key >> kHist1Shift;
    if (bk > b1) ps.above.push_back(static_cast<int32_t>(s));
    else if (bk == b1 && key != 0) ps.cand.push_back((static_cast<uint64_t>(key) << 32) | static_cast<uint32_t>(s));
  }
}

void count_part(PartScratch& ps) {
  ps.n_above = static_cast<int64_t>(ps.above.size());
  ps.n_cand = static_cast<int64_t>(ps.cand.size());
}

void scan_part_scalar(const uint32_t* keys, int64_t s0, int64_t s1, uint32_t b1, PartScratch& ps) {
  ps.above.clear();
  ps.cand.clear();
  scan_range(keys, s0, s1, b1, ps);
  count_part(ps);
}

#if GLANCE_X86
GLANCE_AVX2 void scan_part_avx2(const uint32_t* keys, int64_t s0, int64_t s1, uint32_t b1, PartScratch& ps) {
  ps.above.clear();
  ps.cand.clear();
  const __m256i lo = _mm256_set1_epi32(static_cast<int>(b1) - 1);  // buckets are 0..2047: signed compare is fine
  int64_t s = s0;
  for (; s + 8 <= s1; s += 8) {
    const __m256i bk = _mm256_srli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(keys + s)), kHist1Shift);
    unsigned m = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(bk, lo))));
    while (m != 0) {
      const int64_t i = s + __builtin_ctz(m);
      m &= m - 1;
      const uint32_t key = keys[i];
      if ((key >> kHist1Shift) > b1) ps.above.push_back(static_cast<int32_t>(i));
      else if (key != 0) ps.cand.push_back((static_cast<uint64_t>(key) << 32) | static_cast<uint32_t>(i));
    }
  }
  scan_range(keys, s, s1, b1, ps);
  count_part(ps);
}

// The same without branches: 16 keys at a time, the positions above b1 and the (key, position) pairs of b1
// compressed into place (one part of a 32K decode row has ~1K of them at unpredictable places; the AVX2 loop's
// per-hit branches cost more than the scan).
GLANCE_AVX512BF16 void scan_part_avx512(const uint32_t* keys, int64_t s0, int64_t s1, uint32_t b1, PartScratch& ps) {
  const size_t cap = static_cast<size_t>(s1 - s0 + 16);  // whole-vector stores may write 16 past the count
  if (ps.above.size() < cap) ps.above.resize(cap);       // grow only: no clearing per call
  if (ps.cand.size() < cap) ps.cand.resize(cap);
  int32_t* above = ps.above.data();
  uint64_t* cand = ps.cand.data();
  int64_t na = 0, nc = 0;
  const __m512i vb1 = _mm512_set1_epi32(static_cast<int>(b1));
  const __m512i zero = _mm512_setzero_si512();
  const __m512i sixteen = _mm512_set1_epi32(16);
  // (position, key) pairs as little-endian uint64 = key << 32 | position, in position order
  const __m512i pair_lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i pair_hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  __m512i pos = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(s0)),
                                 _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  for (int64_t s = s0; s < s1; s += 16, pos = _mm512_add_epi32(pos, sixteen)) {
    // the last vector reads only the keys left (a masked-off lane is key 0: never above b1, never a candidate)
    const __mmask16 live = s1 - s >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << (s1 - s)) - 1u);
    const __m512i key = _mm512_maskz_loadu_epi32(live, keys + s);
    const __m512i bk = _mm512_maskz_srli_epi32(0xFFFF, key, kHist1Shift);  // masked: GCC 12 warns on the plain form
    const __mmask16 ma = _mm512_cmpgt_epu32_mask(bk, vb1);
    const __mmask16 mc = _mm512_mask_cmpneq_epu32_mask(_mm512_cmpeq_epu32_mask(bk, vb1), key, zero);
    _mm512_storeu_si512(above + na, _mm512_maskz_compress_epi32(ma, pos));
    na += __builtin_popcount(ma);
    const __mmask8 mlo = static_cast<__mmask8>(mc), mhi = static_cast<__mmask8>(mc >> 8);
    _mm512_storeu_si512(cand + nc, _mm512_maskz_compress_epi64(mlo, _mm512_permutex2var_epi32(pos, pair_lo, key)));
    nc += __builtin_popcount(mlo);
    _mm512_storeu_si512(cand + nc, _mm512_maskz_compress_epi64(mhi, _mm512_permutex2var_epi32(pos, pair_hi, key)));
    nc += __builtin_popcount(mhi);
  }
  ps.n_above = na;
  ps.n_cand = nc;
}
#endif

struct RowScratch {
  std::vector<PartScratch> parts;
  std::vector<uint64_t> cand, next;
  std::vector<int32_t> picked;
};

// The bucket where the count from the top reaches `need`; `need` becomes the count still wanted inside it.
int64_t pick_bucket(const uint32_t* h, int buckets, int64_t& need) {
  int b = buckets - 1;
  int64_t above = 0;
  for (; b > 0; b--) {
    if (above + h[b] >= need) break;
    above += h[b];
  }
  need -= above;
  return b;
}

}  // namespace

void keys_and_hist4(uint32_t* keys, uint32_t* hist4, const float* scores, int64_t n) {
#if GLANCE_X86
  if (use_avx2()) {
    keys_and_hist4_avx2(keys, hist4, scores, n);
    return;
  }
#endif
  keys_and_hist4_scalar(keys, hist4, scores, n);
}

void fold_hist4(uint32_t* hist, const uint32_t* hist4) {
  for (int i = 1; i < kHist1Buckets; i++)
    hist[i] += hist4[i] + hist4[kHist1Buckets + i] + hist4[2 * kHist1Buckets + i] + hist4[3 * kHist1Buckets + i];
}

void keys_and_hist(uint32_t* keys, uint32_t* hist, const float* scores, int64_t n) {
  if (n >= 1024) {  // a whole row or part: four interleaved histograms (the scores crowd into a few buckets)
    alignas(64) uint32_t sub[4 * kHist1Buckets];
    std::memset(sub, 0, sizeof sub);
    keys_and_hist4(keys, sub, scores, n);
    fold_hist4(hist, sub);
    return;
  }
  keys_and_hist_scalar(keys, hist, scores, n);
}

void select_row(int32_t* idx, int64_t k, const uint32_t* keys, const int64_t* bounds, const uint32_t* hist, int P) {
  if (k <= 0) return;
  uint32_t total[kHist1Buckets];
  std::memcpy(total, hist, sizeof total);
  for (int p = 1; p < P; p++)
    for (int i = 0; i < kHist1Buckets; i++) total[i] += hist[p * kHist1Buckets + i];
  int64_t finite = 0;
  for (int i = 0; i < kHist1Buckets; i++) finite += total[i];
  const int64_t n = bounds[P] - bounds[0];
  int64_t out = 0;
  if (finite <= k) {  // every finite key
    for (int64_t s = bounds[0]; s < bounds[0] + n; s++)
      if (keys[s] != 0) idx[out++] = static_cast<int32_t>(s);
    for (int64_t i = out; i < k; i++) idx[i] = -1;
    return;
  }
  int64_t need = k;
  const uint32_t b1 = static_cast<uint32_t>(pick_bucket(total, kHist1Buckets, need));

  static thread_local RowScratch tls;
  RowScratch& rs = tls;  // the workers below must see this thread's scratch, not their own thread_local
  if (static_cast<int>(rs.parts.size()) < P) rs.parts.resize(static_cast<size_t>(P));
  const bool avx2 = use_avx2(), avx512 = avx2 && use_avx512_bf16();
  parallel_for(
      P,
      [&](int64_t b, int64_t e) {
        for (int64_t p = b; p < e; p++) {
          PartScratch& ps = rs.parts[static_cast<size_t>(p)];
#if GLANCE_X86
          if (avx512) {
            scan_part_avx512(keys, bounds[p], bounds[p + 1], b1, ps);
            continue;
          }
          if (avx2) {
            scan_part_avx2(keys, bounds[p], bounds[p + 1], b1, ps);
            continue;
          }
#endif
          scan_part_scalar(keys, bounds[p], bounds[p + 1], b1, ps);
        }
      },
      P);
  (void)avx2;
  (void)avx512;

  // Levels 2 and 3 (11 and 10 bits) on the candidates of bucket b1: after them the threshold key is known, with
  // `need` = how many keys equal to it are taken (the lowest-positioned ones).
  rs.cand.clear();
  for (int p = 0; p < P; p++)
    rs.cand.insert(rs.cand.end(), rs.parts[p].cand.begin(), rs.parts[p].cand.begin() + rs.parts[p].n_cand);
  uint32_t threshold = b1 << kHist1Shift;
  const int shifts[2] = {10, 0};
  const int bits[2] = {11, 10};
  uint32_t h[2048];
  for (int lv = 0; lv < 2; lv++) {
    const uint32_t mask = (1u << bits[lv]) - 1;
    std::memset(h, 0, sizeof h);
    for (uint64_t e : rs.cand) h[(static_cast<uint32_t>(e >> 32) >> shifts[lv]) & mask]++;
    const uint32_t b = static_cast<uint32_t>(pick_bucket(h, 1 << bits[lv], need));
    threshold |= b << shifts[lv];
    rs.next.clear();
    for (uint64_t e : rs.cand)
      if (((static_cast<uint32_t>(e >> 32) >> shifts[lv]) & mask) == b) rs.next.push_back(e);
    std::swap(rs.cand, rs.next);
  }

  // Each part in position order: its keys above b1 merged with its candidates above the threshold and the first
  // `need` (row-wide) equal to it.
  int64_t ties = 0;
  for (int p = 0; p < P; p++) {
    const PartScratch& ps = rs.parts[p];
    rs.picked.clear();
    for (int64_t c = 0; c < ps.n_cand; c++) {
      const uint64_t e = ps.cand[static_cast<size_t>(c)];
      const uint32_t key = static_cast<uint32_t>(e >> 32);
      if (key > threshold || (key == threshold && ties++ < need)) rs.picked.push_back(static_cast<int32_t>(e));
    }
    const size_t na = static_cast<size_t>(ps.n_above);
    size_t i = 0, j = 0;
    while (i < na && j < rs.picked.size()) idx[out++] = ps.above[i] < rs.picked[j] ? ps.above[i++] : rs.picked[j++];
    while (i < na) idx[out++] = ps.above[i++];
    while (j < rs.picked.size()) idx[out++] = rs.picked[j++];
  }
  for (int64_t i = out; i < k; i++) idx[i] = -1;
}

}  // namespace topk_detail

namespace {

using namespace topk_detail;

// A row long enough to be worth splitting over the threads when there are fewer rows than threads.
constexpr int64_t kSplitRowMin = 8192;

struct TopkScratch {
  std::vector<uint32_t> keys;
  std::vector<uint32_t> hist;
};

uint32_t* keys_scratch(TopkScratch& sc, int64_t S) {
  if (static_cast<int64_t>(sc.keys.size()) < S) sc.keys.resize(static_cast<size_t>(S));
  return sc.keys.data();
}

void topk_row(int32_t* idx, const float* scores, int64_t S, int64_t k, TopkScratch& sc) {
  uint32_t* keys = keys_scratch(sc, S);
  sc.hist.assign(kHist1Buckets, 0);
  keys_and_hist(keys, sc.hist.data(), scores, S);
  const int64_t bounds[2] = {0, S};
  select_row(idx, k, keys, bounds, sc.hist.data(), 1);
}

// One row on P threads: keys and histograms per part, then select_row.
void topk_row_split(int32_t* idx, const float* scores, int64_t S, int64_t k, int P, TopkScratch& sc) {
  uint32_t* keys = keys_scratch(sc, S);
  sc.hist.assign(static_cast<size_t>(P) * kHist1Buckets, 0);
  std::vector<int64_t> bounds(static_cast<size_t>(P) + 1);
  for (int p = 0; p <= P; p++) bounds[p] = S * p / P;
  parallel_for(
      P,
      [&](int64_t b, int64_t e) {
        for (int64_t p = b; p < e; p++)
          keys_and_hist(keys + bounds[p], sc.hist.data() + p * kHist1Buckets, scores + bounds[p],
                        bounds[p + 1] - bounds[p]);
      },
      P);
  select_row(idx, k, keys, bounds.data(), sc.hist.data(), P);
}

}  // namespace

// idx[t, :] = indices of the k largest finite scores[t, :], in ascending index order, ties by lower index,
// -1 padded.
void topk(int32_t* idx, const float* scores, int64_t T, int64_t S, int64_t k) {
  if (T <= 0 || k <= 0) return;
  const int P = pool_threads();
  if (T < P && S >= kSplitRowMin) {
    static thread_local TopkScratch sc;
    for (int64_t t = 0; t < T; t++) topk_row_split(idx + t * k, scores + t * S, S, k, threads_for(S, 4096), sc);
    return;
  }
  parallel_for(
      T,
      [&](int64_t b, int64_t e) {
        static thread_local TopkScratch sc;
        for (int64_t t = b; t < e; t++) topk_row(idx + t * k, scores + t * S, S, k, sc);
      },
      threads_for(T * (S + 1), 1 << 14));
}

}  // namespace glance
