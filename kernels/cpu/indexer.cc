// Lightning-indexer scores (fp32 reference of DeepSeek V3.2's FP8 indexer):
//   out[t,s] = sum_h weights[t,h] * relu(q[t,h] . keys[s])   for s <= positions[t],  -inf after.
//
// For one query token this is a [Hi x D] by [D x S] GEMM followed by a ReLU-weighted reduction over heads.
// Heads in multiples of 16: each query q[t] is first transposed into a [D][H16] panel; tiles of 6 keys x 16
// heads then run through the 6x16 FMA micro-kernel (keys broadcast from their rows, the query panel as the
// 16-wide operand) and the epilogue folds ReLU x weight x sum-over-heads.
// The remaining Hi % 16 heads (all of them for small indexers, e.g. Hi = 4) use direct dot products in
// register blocks of 2 keys x 4 heads, whose 8 sums are reduced together, so that no lane computes padding.
// Work items are (chunk of kChunk keys, t), in blocks of query tokens. Only keys s <= positions[t] are computed;
// the rest of the row is -inf.
#include <algorithm>
#include <limits>
#include <vector>

#include "kernels.h"
#include "microkernel.h"
#include "simd.h"
#include "thread_pool.h"
#include "vec_math.h"

namespace glance {

namespace {

constexpr int64_t kChunk = 256;

void scores_scalar(float* out, const float* q, const float* w, const float* keys, int64_t s0, int64_t s1,
                   int64_t Hi, int64_t D) {
  for (int64_t s = s0; s < s1; s++) {
    const float* kr = keys + s * D;
    float total = 0.0f;
    for (int64_t h = 0; h < Hi; h++) {
      const float* qh = q + h * D;
      float acc[4] = {0, 0, 0, 0};
      int64_t d = 0;
      for (; d + 4 <= D; d += 4)
        for (int u = 0; u < 4; u++) acc[u] += qh[d + u] * kr[d + u];
      float dot = (acc[0] + acc[2]) + (acc[1] + acc[3]);
      for (; d < D; d++) dot += qh[d] * kr[d];
      total += w[h] * std::max(dot, 0.0f);
    }
    out[s] = total;
  }
}

#if GLANCE_X86
// Keys [s0, s1) against one query panel qp [D][Hp] with head weights wp [Hp] (Hp a multiple of 16).
GLANCE_AVX2 void scores_avx2(float* out, const float* qp, const float* wp, const float* keys, int64_t s0,
                             int64_t s1, int64_t Hp, int64_t D) {
  alignas(32) float tile[kMR * kNR];
  for (int64_t s = s0; s < s1; s += kMR) {
    const int mr = static_cast<int>(std::min<int64_t>(kMR, s1 - s));
    __m256 tot[kMR];
    for (int i = 0; i < kMR; i++) tot[i] = _mm256_setzero_ps();
    for (int64_t hs = 0; hs < Hp; hs += kNR) {
      ukernel_avx2(mr, D, keys + s * D, D, qp + hs, Hp, tile, kNR, kNR, false);
      const __m256 w0 = _mm256_loadu_ps(wp + hs), w1 = _mm256_loadu_ps(wp + hs + 8);
      const __m256 z = _mm256_setzero_ps();
      for (int i = 0; i < mr; i++) {
        tot[i] = _mm256_fmadd_ps(_mm256_max_ps(_mm256_load_ps(tile + i * kNR), z), w0, tot[i]);
        tot[i] = _mm256_fmadd_ps(_mm256_max_ps(_mm256_load_ps(tile + i * kNR + 8), z), w1, tot[i]);
      }
    }
    for (int i = 0; i < mr; i++) out[s + i] = hsum256(tot[i]);
  }
}

// out[s] (+)= sum_{h0 <= h < h1} w[h] * relu(q[h] . keys[s]) for s in [s0, s1); q: [.., D] rows of one token.
GLANCE_AVX2 void scores_direct_avx2(float* out, const float* q, const float* w, const float* keys, int64_t s0,
                                    int64_t s1, int64_t h0, int64_t h1, int64_t D, bool accumulate) {
  const int64_t D8 = D / 8 * 8;
  const __m256i mask = first_lanes(D - D8);
  const __m256 z = _mm256_setzero_ps();
  for (int64_t s = s0; s < s1; s += 2) {
    const bool two = s + 1 < s1;
    const float* k0 = keys + s * D;
    const float* k1 = two ? k0 + D : k0;
    __m256 tv = z;
    for (int64_t h = h0; h < h1; h += 4) {
      const int nh = static_cast<int>(std::min<int64_t>(4, h1 - h));
      const float* qh[4];
      alignas(32) float wl[8];
      for (int i = 0; i < 4; i++) {
        qh[i] = q + (h + (i < nh ? i : 0)) * D;
        wl[i] = wl[i + 4] = i < nh ? w[h + i] : 0.0f;
      }
      __m256 acc[8];
      for (int i = 0; i < 8; i++) acc[i] = z;
      int64_t d = 0;
      for (; d < D8; d += 8) {
        const __m256 a = _mm256_loadu_ps(k0 + d), b = _mm256_loadu_ps(k1 + d);
        for (int i = 0; i < 4; i++) {
          const __m256 qv = _mm256_loadu_ps(qh[i] + d);
          acc[i] = _mm256_fmadd_ps(a, qv, acc[i]);
          acc[i + 4] = _mm256_fmadd_ps(b, qv, acc[i + 4]);
        }
      }
      if (d < D) {
        const __m256 a = _mm256_maskload_ps(k0 + d, mask), b = _mm256_maskload_ps(k1 + d, mask);
        for (int i = 0; i < 4; i++) {
          const __m256 qv = _mm256_maskload_ps(qh[i] + d, mask);
          acc[i] = _mm256_fmadd_ps(a, qv, acc[i]);
          acc[i + 4] = _mm256_fmadd_ps(b, qv, acc[i + 4]);
        }
      }
      // lanes: key 0 x heads h..h+3, key 1 x heads h..h+3
      tv = _mm256_fmadd_ps(_mm256_max_ps(hsum8x8(acc), z), _mm256_load_ps(wl), tv);
    }
    alignas(32) float r[8];
    _mm256_store_ps(r, tv);
    const float r0 = (r[0] + r[1]) + (r[2] + r[3]);
    const float r1 = (r[4] + r[5]) + (r[6] + r[7]);
    out[s] = accumulate ? out[s] + r0 : r0;
    if (two) out[s + 1] = accumulate ? out[s + 1] + r1 : r1;
  }
}
#endif

}  // namespace

// out[t,s] = sum_h weights[t,h] * relu(q[t,h] . keys[s]) for s <= positions[t], -inf for s > positions[t]
// (q: [T, Hi, D]; weights: [T, Hi]; keys: [S, D]; out: [T, S]; any int32 position, negative = all -inf).
void indexer_scores(float* out, const float* q, const float* weights, const float* keys, int64_t T, int64_t S,
                    int64_t Hi, int64_t D, const int32_t* positions) {
  if (T <= 0 || S <= 0) return;
  const float ninf = -std::numeric_limits<float>::infinity();
  const bool avx2 = use_avx2();
  const int64_t Hp = Hi / kNR * kNR;  // heads through the micro-kernel; the rest go direct
  const int64_t chunks = (S + kChunk - 1) / kChunk;
  // Query tokens in blocks of kTokenBlock: the block's query panels [TB][D][Hp] and weights [TB][Hp] are packed
  // (AVX2 path only), then its (chunk, t) items run chunk-major, so that a chunk of keys is reused from cache
  // across the block's tokens. Items are handed out dynamically: causal rows have very different lengths.
  constexpr int64_t kTokenBlock = 64;
  std::vector<float> qpanel, wpanel;
  if (avx2 && Hp > 0) {
    qpanel.resize(static_cast<size_t>(std::min(T, kTokenBlock) * D * Hp));
    wpanel.resize(static_cast<size_t>(std::min(T, kTokenBlock) * Hp));
  }
  for (int64_t tb = 0; tb < T; tb += kTokenBlock) {
    const int64_t TB = std::min(kTokenBlock, T - tb);
    if (avx2 && Hp > 0) {
      parallel_for(
          TB,
          [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; i++) {
              const int64_t t = tb + i;
              float* qp = qpanel.data() + i * D * Hp;
              for (int64_t h = 0; h < Hp; h++) {
                const float* qh = q + (t * Hi + h) * D;
                for (int64_t d = 0; d < D; d++) qp[d * Hp + h] = qh[d];
              }
              std::copy(weights + t * Hi, weights + t * Hi + Hp, wpanel.data() + i * Hp);
            }
          },
          threads_for(TB * Hp * D, 1 << 16));
    }
    int64_t work = 0;
    for (int64_t t = tb; t < tb + TB; t++) work += std::min<int64_t>(S, std::max<int64_t>(0, static_cast<int64_t>(positions[t]) + 1));
    // One work item: keys [s0, s1) of token t = tb + i.
    auto item = [&](int64_t it) {
      const int64_t ch = it / TB, i = it % TB, t = tb + i;
      const int64_t s0 = ch * kChunk, s1 = std::min(S, s0 + kChunk);
      const int64_t limit = std::min<int64_t>(S - 1, positions[t]);  // last key attended
      const int64_t ve = std::max(s0, std::min(s1, limit + 1));
      float* o = out + t * S;
      if (ve > s0) {
#if GLANCE_X86
        if (avx2) {
          if (Hp > 0) scores_avx2(o, qpanel.data() + i * D * Hp, wpanel.data() + i * Hp, keys, s0, ve, Hp, D);
          if (Hp < Hi || Hp == 0)
            scores_direct_avx2(o, q + t * Hi * D, weights + t * Hi, keys, s0, ve, Hp, Hi, D, Hp > 0);
        } else
#endif
        {
          scores_scalar(o, q + t * Hi * D, weights + t * Hi, keys, s0, ve, Hi, D);
        }
      }
      for (int64_t s = ve; s < s1; s++) o[s] = ninf;
    };
    const int threads = threads_for(work * Hi * std::max<int64_t>(D, 1) + TB * S, 1 << 15);
    if (TB == 1) {  // decode: equal chunks, each thread streams one contiguous range of keys
      parallel_for(
          chunks,
          [&](int64_t b, int64_t e) {
            for (int64_t it = b; it < e; it++) item(it);
          },
          threads);
    } else {
      parallel_dynamic(chunks * TB, item, threads);
    }
  }
}

}  // namespace glance
