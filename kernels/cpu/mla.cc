// Multi-head Latent Attention in its absorbed (MQA) form: query absorption, latent attention, value expansion.
//
// The latent cache rows [c_kv (kvLora) | k_pe (rope)] come in three forms: fp32, bf16, and FP8 (DeepSeek's deployment
// form for sparse MLA, cf. FlashMLA's V32_FP8Sparse): [kvLora bytes e4m3fn][rope x bf16][one int8 exponent e per tile of
// c_kv][padding to an even byte count], tile = 128 columns when kvLora % 128 == 0 else 64, c_kv = e4m3 * 2^e with e in
// [-117, 119] (quantize.cc writes them; kernels.h has the details). Power-of-two scales make the decode exact in fp32
// and bf16 alike, so FP8 rows are decoded as they are gathered (into the fp32 or the bf16 block buffer) and the block
// bodies below run unchanged; the prefetching walks the FP8 row stride.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "amx_tiles.h"
#include "dequant_simd.h"
#include "dtype.h"
#include "kernels.h"
#include "microkernel.h"
#include "simd.h"
#include "thread_pool.h"
#include "vec_math.h"

namespace glance {

namespace {

float* scratch(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

constexpr int64_t kAbsorbCols = 64;  // kvLora columns per absorption work item (divides the FP8 block of 128)

}  // namespace

// ---- mla_absorb_query -----------------------------------------------------------------------------------
// out[t,h,c] = sum_{d<nope} q[t,h,d] * kvB[h(nope+v) + d][c].
// Work items are (head, 64-column slice of kvLora). An item dequantises its [nope, 64] slice of W_UK[h] once
// into a thread-local fp32 buffer and multiplies all T query rows by it with the 6x16 micro-kernel, so each
// weight byte is read once per call whatever T is.
void mla_absorb_query(float* out, int64_t outStride, const float* q, int64_t qStride, int64_t T, int64_t H,
                      int64_t nope, int64_t v, const Weight& kvB) {
  const int64_t L = kvB.cols;
  if (T <= 0 || H <= 0 || L <= 0) return;
  const int64_t CW = kAbsorbCols;
  const int64_t chunks = (L + CW - 1) / CW;
  const int64_t ldq = H * qStride, ldo = H * outStride;
  parallel_for(
      H * chunks,
      [&](int64_t b, int64_t e) {
        static thread_local std::vector<float> wbuf;
        float* buf = scratch(wbuf, static_cast<size_t>(std::max<int64_t>(nope, 1) * CW));
        for (int64_t it = b; it < e; it++) {
          const int64_t h = it / chunks, c0 = (it % chunks) * CW;
          const int64_t cw = std::min(CW, L - c0);
          for (int64_t d = 0; d < nope; d++) {
            float* dst = buf + d * CW;
            dequant_row(kvB, h * (nope + v) + d, c0, cw, dst);
            for (int64_t c = cw; c < CW; c++) dst[c] = 0.0f;
          }
          const float* qh = q + h * qStride;
          float* oh = out + h * outStride + c0;
#if GLANCE_X86
          if (use_avx2()) {
            for (int64_t s = 0; s * kNR < cw; s++) {
              const int nvalid = static_cast<int>(std::min<int64_t>(kNR, cw - s * kNR));
              for (int64_t t = 0; t < T; t += kMR) {
                const int mr = static_cast<int>(std::min<int64_t>(kMR, T - t));
                ukernel_avx2(mr, nope, qh + t * ldq, ldq, buf + s * kNR, CW, oh + t * ldo + s * kNR, ldo, nvalid,
                             false);
              }
            }
            continue;
          }
#endif
          for (int64_t t = 0; t < T; t++) {
            float* o = oh + t * ldo;
            for (int64_t c = 0; c < cw; c++) o[c] = 0.0f;
            for (int64_t d = 0; d < nope; d++) {
              const float qd = qh[t * ldq + d];
              const float* wr = buf + d * CW;
              for (int64_t c = 0; c < cw; c++) o[c] += qd * wr[c];
            }
          }
        }
      },
      threads_for(T * H * nope * L, 1 << 16));
}

// ---- mla_expand_value -----------------------------------------------------------------------------------
// out[t, h*v + j] = o[t,h,:] . kvB[h(nope+v) + nope + j][:] : per head a matmul over a slice of kvB's rows.
// Work items are (head, 64-row slice of W_UV[h]); each is one matmul_rows call (GEMV for T <= 8, GEMM above).
void mla_expand_value(float* out, const float* o, int64_t T, int64_t H, int64_t nope, int64_t v, const Weight& kvB) {
  const int64_t L = kvB.cols;
  if (T <= 0 || H <= 0 || v <= 0) return;
  const int64_t RC = 64;
  const int64_t slices = (v + RC - 1) / RC;
  parallel_for(
      H * slices,
      [&](int64_t b, int64_t e) {
        for (int64_t it = b; it < e; it++) {
          const int64_t h = it / slices, j0 = (it % slices) * RC;
          const int64_t j1 = std::min(v, j0 + RC);
          const int64_t rbase = h * (nope + v) + nope;
          matmul_rows(out + h * v + j0, H * v, o + h * L, H * L, T, kvB, rbase + j0, rbase + j1);
        }
      },
      threads_for(T * H * v * std::max<int64_t>(L, 1), 1 << 16));
}

// ---- mla_attention --------------------------------------------------------------------------------------
//
// Work item = (t, group of up to kGroup heads, split of the selected rows). The item walks its rows in blocks
// of kBlock: it computes the kGroup x kBlock logits, updates each head's running max / sum (online softmax),
// rescales the head's accumulator once per block and adds the block's probability-weighted latent rows. A
// latent row is thus loaded once per block for all heads of the group (MQA: every head shares it).
// With fewer (t, group) pairs than threads (decode with few heads), the rows are split into several ranges
// whose partial (acc, max, sum) are combined afterwards with the log-sum-exp rule (split-KV).

namespace {

constexpr int kGroup = 16;
constexpr int kBlock = 16;  // rows per online-softmax step (a multiple of 8; 16 rows of 576 floats stay in L1)
constexpr int64_t kSplitTarget = 16;  // split the rows when there are fewer (t, head-group) items than this
constexpr int64_t kPrefetchAhead = 32;  // sparse, scalar body: selected rows prefetched this far ahead in a burst

struct AttnArgs {
  const float* q;
  int64_t H, L, D;  // D = L + rope
  float scale;
};

// Sparse selections gather rows from anywhere in a cache of many MB: ask for the rows of a later block while the
// current block computes, or each row's DRAM latency is paid in sequence.
inline void prefetch_rows(const char* kv, int64_t rowBytes, const int32_t* idx, int64_t j, int64_t je) {
  for (; j < je; j++) {
    const int64_t s = idx[j];
    if (s < 0) continue;
    const char* row = kv + s * rowBytes;
    for (int64_t b = 0; b < rowBytes; b += 64) prefetch_far(row + b);
  }
}

// Sparse, AVX2 / AVX-512-BF16 / AMX bodies: the next block's selected rows, prefetched a few lines at a time from inside the
// block in hand (step() between its loads and tile products) rather than in one burst before it. A burst of a block's
// ~160 lines waits on the core's ~16 fill buffers and stalls everything behind it, so misses and arithmetic took
// turns; spread out, the fill buffers stay busy while the block computes. With the cache in huge pages this took
// 2,048 random rows of 32K from 250 to ~205 us per layer (bench:cpu-attention, cold); with 4 KiB pages nothing helps
// (every row's page walk comes first).
struct RowPrefetch {
  const char* kv;
  int64_t rowBytes;
  const int32_t* idx;
  int64_t j = 0, end = 0, b = 0;  // the next line: byte b of selected row j, rows [j, end) to go

  // Whatever is left of the last window, then the rows of the block after the one that starts at row j0 (of j1).
  void next_block(int64_t j0, int64_t j1) {
    finish();
    j = std::min(j1, j0 + kBlock), end = std::min(j1, j0 + 2 * kBlock), b = 0;
  }
  // Up to n more lines.
  void step(int n) {
    while (n > 0 && j < end) {
      const int64_t s = idx[j];
      if (s < 0) {
        j++, b = 0;
        continue;
      }
      prefetch_far(kv + s * rowBytes + b);
      n--;
      b += 64;
      if (b >= rowBytes) j++, b = 0;
    }
  }
  void finish() { step(1 << 30); }
};

// Where a block's rows come from (a row source: the cache's bytes and row stride, and row s as fp32 for the AVX2 and
// scalar bodies or as bf16 for the AVX-512-BF16 and AMX ones, "narrow" caches only). fp32 rows are used in place; bf16
// rows are widened (exact) and FP8 rows decoded (exact, see kernels.h) into a per-thread buffer of kBlock rows, so the
// fp32 block kernels below only ever see fp32.
inline void widen_bf16_scalar(float* dst, const uint16_t* src, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32(src[i]);
}

#if GLANCE_X86
GLANCE_AVX2 void widen_bf16_avx2(float* dst, const uint16_t* src, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    const __m256i lo = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(v)), 16);
    const __m256i hi = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(v, 1)), 16);
    _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(lo));
    _mm256_storeu_ps(dst + i + 8, _mm256_castsi256_ps(hi));
  }
  widen_bf16_scalar(dst + i, src + i, n - i);
}
#endif

inline void widen_bf16(float* dst, const uint16_t* src, int64_t n) {
#if GLANCE_X86
  if (use_avx2()) {
    widen_bf16_avx2(dst, src, n);
    return;
  }
#endif
  widen_bf16_scalar(dst, src, n);
}

// ---- FP8 latent rows (layout: kernels.h) ----

// The exponent byte of a tile, clamped to the range quantize_latent_fp8 writes.
inline int64_t fp8_tile_exponent(uint8_t b) { return clamp_latent_fp8_exponent(static_cast<int8_t>(b)); }

inline float pow2f(int64_t e) { return bits_to_f32(static_cast<uint32_t>(e + 127) << 23); }  // e in [-126, 127]

// dst[0, L + R) = the fp32 values of one FP8 row: e4m3 * 2^e is a normal fp32 (or zero or NaN), so the product is exact.
void decode_fp8_f32_scalar(float* dst, const uint8_t* row, int64_t L, int64_t R, int64_t tile) {
  const uint8_t* ex = row + L + 2 * R;
  for (int64_t c0 = 0; c0 < L; c0 += tile) {
    const float sc = pow2f(fp8_tile_exponent(ex[c0 / tile]));
    for (int64_t c = c0; c < c0 + tile; c++) dst[c] = e4m3_to_f32(row[c]) * sc;
  }
  widen_bf16_scalar(dst + L, reinterpret_cast<const uint16_t*>(row + L), R);
}

#if GLANCE_X86
// The same, 16 codes at a time with the weights' e4m3 decode (dequant_simd.h: value * 2^-8, subnormals and NaN
// included), the 2^8 folded into the tile's power of two, so the product stays exact.
GLANCE_AVX2 void decode_fp8_f32_avx2(float* dst, const uint8_t* row, int64_t L, int64_t R, int64_t tile) {
  const uint8_t* ex = row + L + 2 * R;
  for (int64_t c0 = 0; c0 < L; c0 += tile) {
    const __m256 sc = _mm256_set1_ps(pow2f(fp8_tile_exponent(ex[c0 / tile]) + 8));  // e + 8 <= 127
    for (int64_t c = c0; c < c0 + tile; c += 16) {
      __m256 lo, hi;
      load16_e4m3_f16(row + c, lo, hi);
      _mm256_storeu_ps(dst + c, _mm256_mul_ps(lo, sc));
      _mm256_storeu_ps(dst + c + 8, _mm256_mul_ps(hi, sc));
    }
  }
  widen_bf16_avx2(dst + L, reinterpret_cast<const uint16_t*>(row + L), R);
}

// bf16 form of one FP8 row for the AVX-512-BF16 / AMX bodies (defined with them below).
GLANCE_AVX512BF16 void decode_fp8_bf16_avx512(uint16_t* dst, const uint8_t* row, int64_t L, int64_t R, int64_t tile);
#endif

struct F32Rows {
  static constexpr bool kNarrow = false;
  const float* kv;
  int64_t D;
  const char* bytes() const { return reinterpret_cast<const char*>(kv); }
  int64_t row_bytes() const { return D * static_cast<int64_t>(sizeof(float)); }
  const float* f32(int64_t s, float*, int) const { return kv + s * D; }
};

struct Bf16Rows {
  static constexpr bool kNarrow = true;
  const uint16_t* kv;
  int64_t D;
  const char* bytes() const { return reinterpret_cast<const char*>(kv); }
  int64_t row_bytes() const { return D * static_cast<int64_t>(sizeof(uint16_t)); }
  const float* f32(int64_t s, float* buf, int slot) const {
    widen_bf16(buf + slot * D, kv + s * D, D);
    return buf + slot * D;
  }
  const uint16_t* bf16(int64_t s, uint16_t*, int) const { return kv + s * D; }
};

struct Fp8Rows {
  static constexpr bool kNarrow = true;
  const uint8_t* kv;
  int64_t L, R, tile, rb;
  Fp8Rows(const uint8_t* kv_, int64_t L_, int64_t R_)
      : kv(kv_), L(L_), R(R_), tile(latent_fp8_tile(L_)), rb(latent_fp8_row_bytes(L_, R_)) {}
  const char* bytes() const { return reinterpret_cast<const char*>(kv); }
  int64_t row_bytes() const { return rb; }
  const float* f32(int64_t s, float* buf, int slot) const {
    float* dst = buf + slot * (L + R);
#if GLANCE_X86
    if (use_avx2()) {
      decode_fp8_f32_avx2(dst, kv + s * rb, L, R, tile);
      return dst;
    }
#endif
    decode_fp8_f32_scalar(dst, kv + s * rb, L, R, tile);
    return dst;
  }
#if GLANCE_X86
  const uint16_t* bf16(int64_t s, uint16_t* buf, int slot) const {
    uint16_t* dst = buf + slot * (L + R);
    decode_fp8_bf16_avx512(dst, kv + s * rb, L, R, tile);
    return dst;
  }
#endif
};

// Running state of one head: acc[L] (unnormalised), m (max logit), l (sum of exp).
struct HeadState {
  float* acc;
  float m;
  float l;
};

// logits[g*kBlock + j] = scale * q_g . rows[j]; then the online-softmax update of each head's state, leaving
// p (exp(logit - new max)) in logits and the rescale factor in alpha.
inline void softmax_update(float* logits, int G, int nb, HeadState* st, float* alpha) {
  for (int g = 0; g < G; g++) {
    float* lg = logits + g * kBlock;
    float bm = -std::numeric_limits<float>::infinity();
    for (int j = 0; j < nb; j++) bm = std::max(bm, lg[j]);
    const float mnew = std::max(st[g].m, bm);
    const float a = st[g].m == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(st[g].m - mnew);
    float sum = 0.0f;
    for (int j = 0; j < nb; j++) {
      lg[j] = std::exp(lg[j] - mnew);
      sum += lg[j];
    }
    st[g].l = st[g].l * a + sum;
    st[g].m = mnew;
    alpha[g] = a;
  }
}

void attend_block_scalar(const AttnArgs& A, const float* const* qg, int G, const float* const* rows, int nb,
                         HeadState* st) {
  float logits[kGroup * kBlock];
  float alpha[kGroup];
  for (int g = 0; g < G; g++)
    for (int j = 0; j < nb; j++) {
      const float* a = qg[g];
      const float* r = rows[j];
      float s[4] = {0, 0, 0, 0};
      int64_t d = 0;
      for (; d + 4 <= A.D; d += 4)
        for (int u = 0; u < 4; u++) s[u] += a[d + u] * r[d + u];
      float dot = (s[0] + s[2]) + (s[1] + s[3]);
      for (; d < A.D; d++) dot += a[d] * r[d];
      logits[g * kBlock + j] = A.scale * dot;
    }
  softmax_update(logits, G, nb, st, alpha);
  for (int g = 0; g < G; g++) {
    float* acc = st[g].acc;
    const float a = alpha[g];
    for (int64_t c = 0; c < A.L; c++) {
      float v = acc[c] * a;
      for (int j = 0; j < nb; j++) v += logits[g * kBlock + j] * rows[j][c];
      acc[c] = v;
    }
  }
}

#if GLANCE_X86
GLANCE_AVX2 inline float hmax256(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// The same block update as attend_block_scalar, vectorised:
//  - logits in register blocks of 2 heads x 4 rows (8 accumulators reduced together by hsum8x8), so that each
//    loaded row vector feeds two FMAs and each query vector four;
//  - the softmax over the block's rows with exp256, 8 rows per vector;
//  - the accumulation 2 heads x 32 columns at a time (8 accumulators, each row vector feeding two heads).
GLANCE_AVX2 void attend_block_avx2(const AttnArgs& A, const float* const* qg, int G, const float* const* rows,
                                   int nb, HeadState* st, RowPrefetch* pf) {
  alignas(32) float logits[kGroup * kBlock];
  float alpha[kGroup];
  const int64_t D = A.D, D8 = D / 8 * 8, L = A.L;
  const __m256i dmask = first_lanes(D - D8);
  const __m256 vscale = _mm256_set1_ps(A.scale);
  for (int g = 0; g < G; g += 2) {
    const bool two = g + 1 < G;
    const float* q0 = qg[g];
    const float* q1 = two ? qg[g + 1] : q0;
    for (int j = 0; j < nb; j += 4) {
      if (pf) pf->step(3);
      const float* r[4];
      for (int i = 0; i < 4; i++) r[i] = rows[j + i < nb ? j + i : nb - 1];
      __m256 acc[8];
      for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
      int64_t d = 0;
      for (; d < D8; d += 8) {
        const __m256 a0 = _mm256_loadu_ps(q0 + d), a1 = _mm256_loadu_ps(q1 + d);
        for (int i = 0; i < 4; i++) {
          const __m256 rv = _mm256_loadu_ps(r[i] + d);
          acc[i] = _mm256_fmadd_ps(a0, rv, acc[i]);
          acc[4 + i] = _mm256_fmadd_ps(a1, rv, acc[4 + i]);
        }
      }
      if (d < D) {
        const __m256 a0 = _mm256_maskload_ps(q0 + d, dmask), a1 = _mm256_maskload_ps(q1 + d, dmask);
        for (int i = 0; i < 4; i++) {
          const __m256 rv = _mm256_maskload_ps(r[i] + d, dmask);
          acc[i] = _mm256_fmadd_ps(a0, rv, acc[i]);
          acc[4 + i] = _mm256_fmadd_ps(a1, rv, acc[4 + i]);
        }
      }
      const __m256 sums = _mm256_mul_ps(hsum8x8(acc), vscale);  // q0 . r0..r3, q1 . r0..r3
      _mm_storeu_ps(logits + g * kBlock + j, _mm256_castps256_ps128(sums));
      if (two) _mm_storeu_ps(logits + (g + 1) * kBlock + j, _mm256_extractf128_ps(sums, 1));
    }
  }
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int g = 0; g < G; g++) {
    float* lg = logits + g * kBlock;
    __m256 v[kBlock / 8];
    __m256i m[kBlock / 8];
    __m256 mx = ninf;
    for (int u = 0; u < kBlock / 8; u++) {
      m[u] = first_lanes(nb - 8 * u);
      v[u] = _mm256_blendv_ps(ninf, _mm256_loadu_ps(lg + 8 * u), _mm256_castsi256_ps(m[u]));
      mx = _mm256_max_ps(mx, v[u]);
    }
    const float mnew = std::max(st[g].m, hmax256(mx));
    const float a = st[g].m == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(st[g].m - mnew);
    const __m256 vm = _mm256_set1_ps(mnew);
    __m256 sum = _mm256_setzero_ps();
    for (int u = 0; u < kBlock / 8; u++) {
      const __m256 p = _mm256_and_ps(exp256(_mm256_sub_ps(v[u], vm)), _mm256_castsi256_ps(m[u]));
      _mm256_store_ps(lg + 8 * u, p);
      sum = _mm256_add_ps(sum, p);
    }
    st[g].l = st[g].l * a + hsum256(sum);
    st[g].m = mnew;
    alpha[g] = a;
  }
  for (int g = 0; g < G; g += 2) {
    const bool two = g + 1 < G;
    const int g1 = two ? g + 1 : g;
    float* acc0 = st[g].acc;
    float* acc1 = st[g1].acc;
    const float* p0 = logits + g * kBlock;
    const float* p1 = logits + g1 * kBlock;
    const __m256 va0 = _mm256_set1_ps(alpha[g]), va1 = _mm256_set1_ps(alpha[g1]);
    int64_t c = 0;
    for (; c + 32 <= L; c += 32) {
      if (pf) pf->step(4);
      __m256 x0[4], x1[4];
      for (int u = 0; u < 4; u++) {
        x0[u] = _mm256_mul_ps(_mm256_loadu_ps(acc0 + c + 8 * u), va0);
        x1[u] = _mm256_mul_ps(_mm256_loadu_ps(acc1 + c + 8 * u), va1);
      }
      for (int j = 0; j < nb; j++) {
        const __m256 b0 = _mm256_broadcast_ss(p0 + j), b1 = _mm256_broadcast_ss(p1 + j);
        const float* r = rows[j] + c;
        for (int u = 0; u < 4; u++) {
          const __m256 rv = _mm256_loadu_ps(r + 8 * u);
          x0[u] = _mm256_fmadd_ps(b0, rv, x0[u]);
          x1[u] = _mm256_fmadd_ps(b1, rv, x1[u]);
        }
      }
      for (int u = 0; u < 4; u++) {
        if (two) _mm256_storeu_ps(acc1 + c + 8 * u, x1[u]);
        _mm256_storeu_ps(acc0 + c + 8 * u, x0[u]);
      }
    }
    for (; c < L; c += 8) {
      const __m256i cm = first_lanes(L - c);
      __m256 x0 = _mm256_mul_ps(_mm256_maskload_ps(acc0 + c, cm), va0);
      __m256 x1 = _mm256_mul_ps(_mm256_maskload_ps(acc1 + c, cm), va1);
      for (int j = 0; j < nb; j++) {
        const __m256 rv = _mm256_maskload_ps(rows[j] + c, cm);
        x0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p0 + j), rv, x0);
        x1 = _mm256_fmadd_ps(_mm256_broadcast_ss(p1 + j), rv, x1);
      }
      if (two) _mm256_maskstore_ps(acc1 + c, cm, x1);
      _mm256_maskstore_ps(acc0 + c, cm, x0);
    }
  }
}

// ---- bf16 cache on AVX-512-BF16 (vdpbf16ps) ----
// The precision contract of the CUDA sparse MLA kernel (kernels/cuda/sparse_mla.cu): q rounded to bf16 (nearest
// even), logits and the softmax in fp32, the probabilities rounded to bf16 before P.V, fp32 accumulation. The rows
// are read as bf16 straight from the cache (no widening). Only the bf16-cache op uses it; fp32 caches keep fp32 math.
//
// P.V pairs two rows per vdpbf16ps: unpacklo/hi_epi16 of rows (2i, 2i+1) give, in each 32-bit lane, one column of
// both rows, and the multiplier is the pair (p_2i, p_2i+1) broadcast. unpack works within 128-bit lanes, so the
// accumulator of a 32-column chunk holds its columns in the order kPairCol below; the item keeps its accumulators
// in that order and puts them back in column order once, at its end (kPairCol[i]: the column of lane i).
// GCC 12's own AVX-512 cast/extract intrinsics trip -Wmaybe-uninitialized (_mm256_undefined_pd); not our code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
constexpr int kPairCol[32] = {0,  1,  2,  3,  8,  9,  10, 11, 16, 17, 18, 19, 24, 25, 26, 27,
                              4,  5,  6,  7,  12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31};

inline int64_t round_up32(int64_t n) { return (n + 31) / 32 * 32; }

// dst[0, Dp) = q rounded to bf16, zero beyond D.
GLANCE_AVX512BF16 void round_query_bf16(uint16_t* dst, const float* q, int64_t D) {
  const int64_t Dp = round_up32(D);
  for (int64_t d = 0; d < Dp; d += 16) {
    const int64_t n = std::max<int64_t>(0, std::min<int64_t>(16, D - d));
    const __mmask16 m = static_cast<__mmask16>((1u << n) - 1u);
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, q + d));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + d), reinterpret_cast<const __m256i&>(v));
  }
}

// bf16 bits of the e4m3 magnitude codes 0..127 (every one a normal bf16 or zero; 0x7F the NaN): the byte tables of
// indexer_fp8_amx.cc's decode as one 16-bit table, so that two vpermi2w (AVX-512 BW, no VBMI needed) look up 32 codes.
struct Bf16OfE4m3 {
  alignas(64) uint16_t v[128];
  Bf16OfE4m3() {
    for (int b = 0; b < 128; b++) v[b] = static_cast<uint16_t>(f32_to_bits(e4m3_to_f32(static_cast<uint8_t>(b))) >> 16);
  }
};
const Bf16OfE4m3 kBf16OfE4m3;  // reads kE4M3Lut, which is constant-initialised (dequant.cc)

// One FP8 row as bf16: the table value of each code, then e added to the exponent field of the non-zero, non-NaN lanes
// (exact: the clamp of e keeps every result a normal bf16), then the sign; k_pe copied as it is.
GLANCE_AVX512BF16 void decode_fp8_bf16_avx512(uint16_t* dst, const uint8_t* row, int64_t L, int64_t R, int64_t tile) {
  const __m512i t0 = _mm512_load_si512(kBf16OfE4m3.v), t1 = _mm512_load_si512(kBf16OfE4m3.v + 32);
  const __m512i t2 = _mm512_load_si512(kBf16OfE4m3.v + 64), t3 = _mm512_load_si512(kBf16OfE4m3.v + 96);
  const __m512i low7 = _mm512_set1_epi16(0x7F), bit6 = _mm512_set1_epi16(0x40), signbit = _mm512_set1_epi16(0x80);
  const uint8_t* ex = row + L + 2 * R;
  for (int64_t c0 = 0; c0 < L; c0 += tile) {
    const int64_t e = fp8_tile_exponent(ex[c0 / tile]);
    const __m512i add = _mm512_set1_epi16(static_cast<int16_t>(e * 128));
    const __m512i bias = _mm512_set1_epi16(static_cast<int16_t>((120 + e) * 128));
    for (int64_t c = c0; c < c0 + tile; c += 32) {
      const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c));
      const __m512i code = _mm512_cvtepu8_epi16(bytes);
      // Fast path, 32 normal codes (exponent bits non-zero, not NaN): the bf16 bits are the code's sign, exponent
      // and mantissa moved into place, ((code << 8) >>a 4) & 0x87F0, plus the exponent bias (120) and the tile's e in
      // one add. Exact: e4 + 120 + e stays in [4, 254] for e in [-117, 119]. Zero, subnormal and NaN codes (rare) go
      // through the table below.
      const __mmask32 special = _mm256_testn_epi8_mask(bytes, _mm256_set1_epi8(0x78)) |
                                _mm256_cmpeq_epi8_mask(_mm256_and_si256(bytes, _mm256_set1_epi8(0x7F)), _mm256_set1_epi8(0x7F));
      if (special == 0) {
        const __m512i v = _mm512_and_si512(_mm512_srai_epi16(_mm512_slli_epi16(code, 8), 4), _mm512_set1_epi16(static_cast<int16_t>(0x87F0)));
        _mm512_storeu_si512(dst + c, _mm512_add_epi16(v, bias));
        continue;
      }
      const __m512i m = _mm512_and_si512(code, low7);
      const __m512i lo = _mm512_permutex2var_epi16(t0, m, t1);  // codes 0..63 (index bits 0-5)
      const __m512i hi = _mm512_permutex2var_epi16(t2, m, t3);  // codes 64..127
      __m512i v = _mm512_mask_blend_epi16(_mm512_test_epi16_mask(m, bit6), lo, hi);
      const __mmask32 live = _mm512_test_epi16_mask(m, m) & _mm512_cmpneq_epi16_mask(m, low7);
      v = _mm512_mask_add_epi16(v, live, v, add);
      v = _mm512_or_si512(v, _mm512_slli_epi16(_mm512_and_si512(code, signbit), 8));
      _mm512_storeu_si512(dst + c, v);
    }
  }
  std::memcpy(dst + L, row + L, static_cast<size_t>(2 * R));
}

// The online-softmax step of a block shared by the AVX-512-BF16 and AMX bodies: logits[g * kBlock + j] (scaled) ->
// each head's new max and sum in st, its rescale factor in alpha, and p rounded to bf16 as (p_2i, p_2i+1) pairs in
// ppair[g * kBlock / 2 + i].
GLANCE_AVX512BF16 void softmax_block_bf16(const float* logits, int G, int nb, HeadState* st, float* alpha,
                                          uint32_t* ppair) {
  static_assert(kBlock == 16, "one zmm of probabilities per head");
  const __mmask16 valid = static_cast<__mmask16>((1u << nb) - 1u);
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int g = 0; g < G; g++) {
    const float* lg = logits + g * kBlock;
    const __m512 v = _mm512_mask_loadu_ps(ninf, valid, lg);
    const float mnew = std::max(st[g].m, _mm512_reduce_max_ps(v));
    const float a = st[g].m == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(st[g].m - mnew);
    const __m256 vm = _mm256_set1_ps(mnew);
    const __m256 p0 = exp256(_mm256_sub_ps(_mm512_castps512_ps256(v), vm));
    const __m256 p1 = exp256(_mm256_sub_ps(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)), vm));
    const __m512 p = _mm512_maskz_mov_ps(
        valid, _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(p0)), _mm256_castps_pd(p1), 1)));
    st[g].l = st[g].l * a + _mm512_reduce_add_ps(p);  // the fp32 probabilities, as the CUDA kernel sums them
    st[g].m = mnew;
    alpha[g] = a;
    const __m256bh pb = _mm512_cvtneps_pbh(p);
    _mm256_store_si256(reinterpret_cast<__m256i*>(ppair + g * (kBlock / 2)), reinterpret_cast<const __m256i&>(pb));
  }
}

// qb[g]: bf16 query of head g (Dp elements, zero-padded); rows[0, kBlock): bf16 rows (those past nb point at a
// zero row); acc[g]: head g's accumulator in pair order (Lp = round_up32(L) floats).
GLANCE_AVX512BF16 void attend_block_bf16dot(const AttnArgs& A, const uint16_t* const* qb, int G,
                                            const uint16_t* const* rows, int nb, float* const* acc, HeadState* st,
                                            RowPrefetch* pf) {
  alignas(64) float logits[kGroup * kBlock];
  alignas(64) uint32_t ppair[kGroup * kBlock / 2];  // (p_2i, p_2i+1) as two bf16
  float alpha[kGroup];
  const int64_t D = A.D, L = A.L;
  const int64_t D32 = D / 32 * 32;
  const __mmask32 dmask = static_cast<__mmask32>((uint64_t{1} << (D - D32)) - 1u);
  const __m256 vscale = _mm256_set1_ps(A.scale);
  for (int g = 0; g < G; g += 2) {
    const bool two = g + 1 < G;
    const uint16_t* q0 = qb[g];
    const uint16_t* q1 = two ? qb[g + 1] : q0;
    for (int j = 0; j < nb; j += 4) {
      if (pf) pf->step(3);
      const uint16_t* r[4] = {rows[j], rows[j + 1], rows[j + 2], rows[j + 3]};
      __m512 x[8];
      for (int i = 0; i < 8; i++) x[i] = _mm512_setzero_ps();
      int64_t d = 0;
      for (; d < D32; d += 32) {
        const __m512bh a0 = (__m512bh)_mm512_loadu_si512(q0 + d);
        const __m512bh a1 = (__m512bh)_mm512_loadu_si512(q1 + d);
        for (int i = 0; i < 4; i++) {
          const __m512bh rv = (__m512bh)_mm512_loadu_si512(r[i] + d);
          x[i] = _mm512_dpbf16_ps(x[i], a0, rv);
          x[4 + i] = _mm512_dpbf16_ps(x[4 + i], a1, rv);
        }
      }
      if (d < D) {
        const __m512bh a0 = (__m512bh)_mm512_loadu_si512(q0 + d);  // zero-padded to Dp
        const __m512bh a1 = (__m512bh)_mm512_loadu_si512(q1 + d);
        for (int i = 0; i < 4; i++) {
          const __m512bh rv = (__m512bh)_mm512_maskz_loadu_epi16(dmask, r[i] + d);
          x[i] = _mm512_dpbf16_ps(x[i], a0, rv);
          x[4 + i] = _mm512_dpbf16_ps(x[4 + i], a1, rv);
        }
      }
      __m256 h[8];
      for (int i = 0; i < 8; i++)
        h[i] = _mm256_add_ps(_mm512_castps512_ps256(x[i]),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x[i]), 1)));
      const __m256 sums = _mm256_mul_ps(hsum8x8(h), vscale);  // q0 . r0..r3, q1 . r0..r3
      _mm_storeu_ps(logits + g * kBlock + j, _mm256_castps256_ps128(sums));
      if (two) _mm_storeu_ps(logits + (g + 1) * kBlock + j, _mm256_extractf128_ps(sums, 1));
    }
  }
  softmax_block_bf16(logits, G, nb, st, alpha, ppair);
  for (int64_t c = 0; c < L; c += 32) {
    if (pf) pf->step(10);
    const int64_t n = std::min<int64_t>(32, L - c);
    const __mmask32 cm = n == 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << n) - 1u);
    __m512i lo[kBlock / 2], hi[kBlock / 2];
    for (int i = 0; i < kBlock / 2; i++) {
      const __m512i ra = _mm512_maskz_loadu_epi16(cm, rows[2 * i] + c);
      const __m512i rb = _mm512_maskz_loadu_epi16(cm, rows[2 * i + 1] + c);
      lo[i] = _mm512_unpacklo_epi16(ra, rb);
      hi[i] = _mm512_unpackhi_epi16(ra, rb);
    }
    for (int g = 0; g < G; g++) {
      float* ac = acc[g] + c;
      const __m512 va = _mm512_set1_ps(alpha[g]);
      __m512 xl = _mm512_mul_ps(_mm512_loadu_ps(ac), va);
      __m512 xh = _mm512_mul_ps(_mm512_loadu_ps(ac + 16), va);
      const uint32_t* pp = ppair + g * (kBlock / 2);
      for (int i = 0; i < kBlock / 2; i++) {
        const __m512bh bp = (__m512bh)_mm512_set1_epi32(static_cast<int>(pp[i]));
        xl = _mm512_dpbf16_ps(xl, (__m512bh)lo[i], bp);
        xh = _mm512_dpbf16_ps(xh, (__m512bh)hi[i], bp);
      }
      _mm512_storeu_ps(ac, xl);
      _mm512_storeu_ps(ac + 16, xh);
    }
  }
}
#endif

#if GLANCE_AMX_BUILD
// ---- bf16 cache on AMX (tdpbf16ps) ----
// attend_block_bf16dot's precision contract and accumulator layout, with both products on tiles:
//   logits = rows x q: A = the block's 16 rows copied contiguous (16 x 32 columns per tile), B = q as 32 columns x
//            G heads (built once per item: amx_query_tiles), C = 16 rows x G heads;
//   P.V:     A = p as G heads x 16 rows (ppair as it is), B = the unpacklo/hi vectors of attend_block_bf16dot (8 row
//            pairs x 16 columns: the VNNI layout tdpbf16ps wants), C = a 16-column piece of every head's accumulator,
//            loaded from and stored back to acc (G rows, Lp floats apart).
// Registers: tmm0 logits, tmm1 rows, tmm2 q, tmm3 p, tmm4/tmm6 accumulator pieces, tmm5/tmm7 row-pair chunks.
// AMX reads bf16 subnormals as zero and flushes subnormal results: only values below 1.2e-38 differ.

GLANCE_AMX void amx_attention_tiles(int G) {
  TileConfig cfg;
  const uint16_t gb = static_cast<uint16_t>(4 * G);
  cfg.rows[0] = 16, cfg.colsb[0] = gb;  // logits: 16 rows x G heads (fp32)
  cfg.rows[1] = 16, cfg.colsb[1] = 64;  // 16 rows x 32 columns
  cfg.rows[2] = 16, cfg.colsb[2] = gb;  // 16 column pairs x G heads
  cfg.rows[3] = static_cast<uint8_t>(G), cfg.colsb[3] = 32;  // p: G heads x 16 rows
  for (int t : {4, 6}) cfg.rows[t] = static_cast<uint8_t>(G), cfg.colsb[t] = 64;  // G heads x 16 columns (fp32)
  for (int t : {5, 7}) cfg.rows[t] = 8, cfg.colsb[t] = 64;                         // 8 row pairs x 16 columns
  load_tile_config(cfg, 0x100u | static_cast<uint32_t>(G));
}

// qt[(c * 16 + i) * 32 + 2g + e] = qb[g][32c + 2i + e]: the B tiles of the logits (rows of 64 bytes, G pairs used).
void amx_query_tiles(uint16_t* qt, const uint16_t* const* qb, int G, int64_t Dp) {
  for (int64_t c = 0; c < Dp / 32; c++)
    for (int i = 0; i < 16; i++) {
      uint16_t* row = qt + (c * 16 + i) * 32;
      std::fill(row, row + 32, uint16_t{0});
      for (int g = 0; g < G; g++) {
        row[2 * g] = qb[g][32 * c + 2 * i];
        row[2 * g + 1] = qb[g][32 * c + 2 * i + 1];
      }
    }
}

// As attend_block_bf16dot; rbuf: scratch of kBlock * Dp bf16; acc0 = acc[0], the heads' accumulators Lp floats apart.
GLANCE_AMX void attend_block_amx(const AttnArgs& A, const uint16_t* qt, int G, const uint16_t* const* rows, int nb,
                                 float* acc0, int64_t Lp, HeadState* st, uint16_t* rbuf, RowPrefetch* pf) {
  const int64_t D = A.D, L = A.L, Dp = round_up32(D);
  for (int j = 0; j < kBlock; j++) {  // contiguous rows for the tile loads (zero past D; the padding rows are zero)
    if (pf) pf->step(2);
    for (int64_t d = 0; d < Dp; d += 32) {
      const int64_t n = std::max<int64_t>(0, std::min<int64_t>(32, D - d));
      const __mmask32 m = n == 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << n) - 1u);
      _mm512_storeu_si512(rbuf + j * Dp + d, _mm512_maskz_loadu_epi16(m, rows[j] + d));
    }
  }
  amx_attention_tiles(G);
  _tile_zero(0);
  for (int64_t c = 0; c < Dp / 32; c++) {
    if (pf) pf->step(4);
    _tile_loadd(1, rbuf + c * 32, Dp * 2);
    _tile_loadd(2, qt + c * 16 * 32, 64);
    _tile_dpbf16ps(0, 1, 2);
  }
  alignas(64) float dots[kBlock * 16];
  _tile_stored(0, dots, 64);
  alignas(64) float logits[kGroup * kBlock];
  for (int g = 0; g < G; g++)
    for (int j = 0; j < kBlock; j++) logits[g * kBlock + j] = dots[j * 16 + g] * A.scale;
  alignas(64) uint32_t ppair[kGroup * kBlock / 2];
  float alpha[kGroup];
  softmax_block_bf16(logits, G, nb, st, alpha, ppair);
  for (int g = 0; g < G; g++) {  // rescale where the head's max moved (alpha is exactly 1 where it did not)
    if (alpha[g] == 1.0f) continue;
    const __m512 va = _mm512_set1_ps(alpha[g]);
    float* a = acc0 + g * Lp;
    for (int64_t c = 0; c < Lp; c += 16) _mm512_storeu_ps(a + c, _mm512_mul_ps(_mm512_loadu_ps(a + c), va));
  }
  _tile_loadd(3, ppair, 32);
  alignas(64) uint16_t lo[kBlock / 2][32], hi[kBlock / 2][32];
  for (int64_t c = 0; c < L; c += 32) {
    if (pf) pf->step(10);
    // a last chunk past L would take the rope columns of rbuf's rows: masked off
    const int64_t n = std::min<int64_t>(32, L - c);
    const __mmask32 cm = n == 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << n) - 1u);
    for (int i = 0; i < kBlock / 2; i++) {
      const __m512i ra = _mm512_maskz_loadu_epi16(cm, rbuf + (2 * i) * Dp + c);
      const __m512i rb = _mm512_maskz_loadu_epi16(cm, rbuf + (2 * i + 1) * Dp + c);
      _mm512_store_si512(lo[i], _mm512_unpacklo_epi16(ra, rb));
      _mm512_store_si512(hi[i], _mm512_unpackhi_epi16(ra, rb));
    }
    _tile_loadd(4, acc0 + c, Lp * 4);
    _tile_loadd(5, lo, 64);
    _tile_dpbf16ps(4, 3, 5);
    _tile_stored(4, acc0 + c, Lp * 4);
    _tile_loadd(6, acc0 + c + 16, Lp * 4);
    _tile_loadd(7, hi, 64);
    _tile_dpbf16ps(6, 3, 7);
    _tile_stored(6, acc0 + c + 16, Lp * 4);
  }
}
#endif

#pragma GCC diagnostic pop

#if GLANCE_X86
// Rows [j0, j1) of an item (the selection idx, or positions j0.. when idx is null) with attend_block_amx where AMX
// is on, else attend_block_bf16dot; on return st[g].acc holds the head's unnormalised accumulator in column order, m
// and l its max and sum.
template <class Rows>
void bf16dot_rows(const AttnArgs& A, const Rows& src, const int32_t* idx, int64_t j0, int64_t j1,
                  const float* const* qg, int G, HeadState* st) {
  const int64_t D = A.D, L = A.L, Dp = round_up32(D), Lp = round_up32(L);
  static thread_local std::vector<uint16_t> qbuf, zero;
  static thread_local std::vector<float> abuf;
  if (qbuf.size() < static_cast<size_t>(kGroup * Dp)) qbuf.resize(static_cast<size_t>(kGroup * Dp));
  if (zero.size() < static_cast<size_t>(std::max(Dp, Lp))) zero.resize(static_cast<size_t>(std::max(Dp, Lp)), 0);
  float* accp = scratch(abuf, static_cast<size_t>(kGroup * Lp));
  const uint16_t* qb[kGroup];
  float* acc[kGroup];
  float* dst[kGroup];
  for (int g = 0; g < G; g++) {
    round_query_bf16(qbuf.data() + g * Dp, qg[g], D);
    qb[g] = qbuf.data() + g * Dp;
    acc[g] = accp + g * Lp;
    std::fill(acc[g], acc[g] + Lp, 0.0f);
    dst[g] = st[g].acc;
  }
#if GLANCE_AMX_BUILD
  const bool amx = use_amx_bf16();
  static thread_local std::vector<uint16_t> qtiles, rowbuf;
  if (amx) {
    if (qtiles.size() < static_cast<size_t>(Dp / 32 * 16 * 32)) qtiles.resize(static_cast<size_t>(Dp / 32 * 16 * 32));
    if (rowbuf.size() < static_cast<size_t>(kBlock * Dp)) rowbuf.resize(static_cast<size_t>(kBlock * Dp));
    amx_query_tiles(qtiles.data(), qb, G, Dp);
  }
#endif
  static thread_local std::vector<uint16_t> decoded;  // FP8 cache: this block's rows as bf16
  if (!std::is_same<Rows, Bf16Rows>::value && decoded.size() < static_cast<size_t>(kBlock * D))
    decoded.resize(static_cast<size_t>(kBlock * D));
  const char* kvBytes = src.bytes();
  const int64_t rowBytes = src.row_bytes();
  const uint16_t* rows[kBlock];
  int64_t j = j0;
  RowPrefetch pf{kvBytes, rowBytes, idx};
  RowPrefetch* next = idx ? &pf : nullptr;
  while (j < j1) {
    if (next) next->next_block(j, j1);
    int nb = 0;
    for (; j < j1 && nb < kBlock; j++) {
      const int64_t s = idx ? idx[j] : j;
      if (s >= 0) {
        rows[nb] = src.bf16(s, decoded.data(), nb);
        nb++;
      }
    }
    if (nb == 0) continue;
    for (int i = nb; i < kBlock; i++) rows[i] = zero.data();
#if GLANCE_AMX_BUILD
    if (amx) {
      attend_block_amx(A, qtiles.data(), G, rows, nb, accp, Lp, st, rowbuf.data(), next);
      continue;
    }
#endif
    attend_block_bf16dot(A, qb, G, rows, nb, acc, st, next);
  }
  for (int g = 0; g < G; g++) {
    for (int64_t c = 0; c < L; c += 32)
      for (int i = 0; i < 32; i++)
        if (c + kPairCol[i] < L) dst[g][c + kPairCol[i]] = acc[g][c + i];
  }
}
#endif

// mla_attention for a cache of fp32, bf16 or FP8 rows (a row source above).
template <class Rows>
void mla_attention_impl(float* out, const float* q, const Rows& src, int64_t T, int64_t H, int64_t kvLora, int64_t rope,
                        float scale, const int32_t* indices, int64_t k, const int32_t* positions) {
  if (T <= 0 || H <= 0) return;
  const int64_t L = kvLora, D = kvLora + rope;
  const AttnArgs A{q, H, L, D, scale};
  const int64_t G = std::min<int64_t>(H, kGroup);
  const int64_t groups = (H + G - 1) / G;
  // Selections padded with −1 (fewer candidates than k) are compacted first, so that split-KV divides the
  // real rows evenly between threads instead of giving some splits only padding.
  std::vector<int32_t> compact;
  std::vector<int64_t> valid;
  if (indices) {
    valid.resize(static_cast<size_t>(T));
    bool padded = false;
    for (int64_t t = 0; t < T && !padded; t++)
      for (int64_t j = 0; j < k; j++)
        if (indices[t * k + j] < 0) {
          padded = true;
          break;
        }
    if (padded) {
      compact.resize(static_cast<size_t>(T * k));
      for (int64_t t = 0; t < T; t++) {
        int64_t n = 0;
        for (int64_t j = 0; j < k; j++)
          if (indices[t * k + j] >= 0) compact[t * k + n++] = indices[t * k + j];
        valid[t] = n;
      }
      indices = compact.data();
    } else {
      for (int64_t t = 0; t < T; t++) valid[t] = k;
    }
  }
  auto count = [&](int64_t t) -> int64_t { return indices ? valid[t] : static_cast<int64_t>(positions[t]) + 1; };
  int64_t maxRows = 0, totalRows = 0;
  for (int64_t t = 0; t < T; t++) {
    maxRows = std::max(maxRows, count(t));
    totalRows += count(t);
  }
  // Split-KV: the number of splits depends on the shapes only, never on the thread count, so that results are
  // the same on every machine.
  const int64_t base = T * groups;
  int64_t splits = 1;
  if (base < kSplitTarget && maxRows >= 512)
    splits = std::max<int64_t>(1, std::min((kSplitTarget + base - 1) / base, maxRows / 256));
  std::vector<float> part;  // [T, H, splits, L + 2]: acc, then m and l
  const int64_t PS = L + 2;
  if (splits > 1) part.resize(static_cast<size_t>(T * H * splits * PS));
  const bool avx2 = use_avx2();
  const bool bf16dot = Rows::kNarrow && use_avx512_bf16();
  (void)bf16dot;

  // One work item: token t, heads [h0, h0 + nG), rows [j0, j1) of its selection.
  auto item = [&](int64_t it) {
    const int64_t sp = it % splits, tg = it / splits;
    const int64_t t = tg / groups, h0 = (tg % groups) * G;
    const int nG = static_cast<int>(std::min<int64_t>(G, H - h0));
    const int64_t n = count(t);
    const int64_t j0 = n * sp / splits;
    int64_t j1 = n * (sp + 1) / splits;
    HeadState st[kGroup];
    const float* qg[kGroup];
    for (int g = 0; g < nG; g++) {
      const int64_t h = h0 + g;
      st[g].acc = splits > 1 ? part.data() + ((t * H + h) * splits + sp) * PS : out + (t * H + h) * L;
      st[g].m = -std::numeric_limits<float>::infinity();
      st[g].l = 0.0f;
      std::fill(st[g].acc, st[g].acc + L, 0.0f);
      qg[g] = q + (t * H + h) * D;
    }
    const int32_t* idx = indices ? indices + t * k : nullptr;
    const float* rows[kBlock];
    static thread_local std::vector<float> widened;  // bf16, FP8: this block's rows in fp32
    float* wbuf = Rows::kNarrow ? scratch(widened, static_cast<size_t>(kBlock * D)) : nullptr;
    const char* kvBytes = src.bytes();
    const int64_t rowBytes = src.row_bytes();
    // the first rows at once; the bodies that spread their prefetching (RowPrefetch) take it from the second block on
    const bool spread = avx2 || bf16dot;
    if (idx) prefetch_rows(kvBytes, rowBytes, idx, j0, std::min(j1, j0 + (spread ? kBlock : kPrefetchAhead)));
#if GLANCE_X86
    if constexpr (Rows::kNarrow) {
      if (bf16dot) {
        bf16dot_rows(A, src, idx, j0, j1, qg, nG, st);
        j1 = j0;  // done: skip the fp32 loop below
      }
    }
#endif
    int64_t j = j0;
    RowPrefetch pf{kvBytes, rowBytes, idx};
#if GLANCE_X86
    RowPrefetch* next = idx && avx2 ? &pf : nullptr;  // the AVX2 body spreads the next block's prefetches
#else
    RowPrefetch* next = nullptr;
#endif
    while (j < j1) {
      if (next) {
        next->next_block(j, j1);
      } else if (idx) {
        prefetch_rows(kvBytes, rowBytes, idx, std::min(j1, j + kPrefetchAhead), std::min(j1, j + kPrefetchAhead + kBlock));
      }
      int nb = 0;
      for (; j < j1 && nb < kBlock; j++) {
        const int64_t s = idx ? idx[j] : j;
        if (s >= 0) {
          rows[nb] = src.f32(s, wbuf, nb);
          nb++;
        }
      }
      if (nb == 0) continue;
#if GLANCE_X86
      if (avx2) {
        attend_block_avx2(A, qg, nG, rows, nb, st, next);
        continue;
      }
#endif
      attend_block_scalar(A, qg, nG, rows, nb, st);
    }
    for (int g = 0; g < nG; g++) {
      if (splits > 1) {  // partial: unnormalised acc, then max and sum
        st[g].acc[L] = st[g].m;
        st[g].acc[L + 1] = st[g].l;
      } else {
        const float inv = st[g].l > 0.0f ? 1.0f / st[g].l : 0.0f;
        for (int64_t c = 0; c < L; c++) st[g].acc[c] *= inv;
      }
    }
  };
  const int threads = threads_for(totalRows * H * D, 1 << 15);
  if (T == 1) {  // decode: equal splits, contiguous per thread
    parallel_for(
        base * splits,
        [&](int64_t b, int64_t e) {
          for (int64_t it = b; it < e; it++) item(it);
        },
        threads);
  } else {  // causal rows differ in length: a static split would give one thread the short rows
    parallel_dynamic(base * splits, item, threads);
  }

  if (splits > 1) {
    parallel_for(
        T * H,
        [&](int64_t b, int64_t e) {
          for (int64_t th = b; th < e; th++) {
            const float* pp = part.data() + th * splits * PS;
            float M = -std::numeric_limits<float>::infinity();
            for (int64_t s = 0; s < splits; s++) M = std::max(M, pp[s * PS + L]);
            float* o = out + th * L;
            std::fill(o, o + L, 0.0f);
            if (M == -std::numeric_limits<float>::infinity()) continue;  // no row at all
            float den = 0.0f;
            for (int64_t s = 0; s < splits; s++) {
              const float m = pp[s * PS + L];
              if (m == -std::numeric_limits<float>::infinity()) continue;
              const float wgt = std::exp(m - M);
              den += wgt * pp[s * PS + L + 1];
              const float* acc = pp + s * PS;
              for (int64_t c = 0; c < L; c++) o[c] += wgt * acc[c];
            }
            const float inv = den > 0.0f ? 1.0f / den : 0.0f;
            for (int64_t c = 0; c < L; c++) o[c] *= inv;
          }
        },
        threads_for(T * H * L * splits, 1 << 14));
  }
}

}  // namespace

// out[t,h] = sum_s softmax_s(scale * q[t,h] . kv[s]) * kv[s][0:kvLora] over s in indices[t, 0..k) minus the -1
// entries (sparse) or s in [0, positions[t]] (indices == null, dense). Indices/positions already checked to be
// in [0, S); an empty set gives zeros. q: [T, H, kvLora + rope]; kv: [S, kvLora + rope]; out: [T, H, kvLora].
void mla_attention(float* out, const float* q, const float* kv, int64_t S, int64_t T, int64_t H, int64_t kvLora,
                   int64_t rope, float scale, const int32_t* indices, int64_t k, const int32_t* positions) {
  (void)S;
  mla_attention_impl(out, q, F32Rows{kv, kvLora + rope}, T, H, kvLora, rope, scale, indices, k, positions);
}

// The same over bf16 cache rows (widened exactly to fp32 as they are gathered).
void mla_attention_bf16(float* out, const float* q, const uint16_t* kv, int64_t S, int64_t T, int64_t H,
                        int64_t kvLora, int64_t rope, float scale, const int32_t* indices, int64_t k,
                        const int32_t* positions) {
  (void)S;
  mla_attention_impl(out, q, Bf16Rows{kv, kvLora + rope}, T, H, kvLora, rope, scale, indices, k, positions);
}

// The same over FP8 cache rows (decoded exactly as they are gathered; layout in kernels.h).
void mla_attention_fp8(float* out, const float* q, const uint8_t* kv, int64_t S, int64_t T, int64_t H, int64_t kvLora,
                       int64_t rope, float scale, const int32_t* indices, int64_t k, const int32_t* positions) {
  (void)S;
  mla_attention_impl(out, q, Fp8Rows(kv, kvLora, rope), T, H, kvLora, rope, scale, indices, k, positions);
}

}  // namespace glance
