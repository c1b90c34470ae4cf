// matmul: out[T, rows] = x[T, cols] . W^T with W in F32 / BF16 / F16 / FP8-e4m3 (block-scaled), fp32 accumulation.
//
// Two regimes:
//  - GEMV (T <= 8, decode): memory-bandwidth bound. Rows of W are split across threads in groups of 4; each
//    weight row is read exactly once and dequantised in registers (bf16: 16-bit shift; f16: F16C; e4m3: bit
//    move into f16 + F16C, 32 bytes per step with NaN codes checked once per block, block scale x 2^8 applied
//    once per 128 columns, rows software-prefetched by a distance that depends on the row length) and FMA'd against all T rows of x, which stay in L1/L2.
//    Several rows x tokens accumulate in independent registers to hide the FMA latency.
//  - GEMM (T > 8, prefill): compute bound. Each thread owns panels of kNC weight rows; a panel's kKC-column
//    slice is dequantised once into a thread-local fp32 buffer in micro-panel order [16 rows][kKC] -> [kKC][16]
//    and reused for every row of x (blocked by kMC rows so that the x slice stays in L2), through the 6x16
//    register-tiled FMA micro-kernel (microkernel.cc).
#include <algorithm>
#include <cstring>
#include <vector>

#include "dequant_simd.h"
#include "kernels.h"
#include "microkernel.h"
#include "simd.h"
#include "thread_pool.h"

namespace glance {

namespace {

constexpr int64_t kNC = 64;   // weight rows per GEMM panel (4 micro-panels of 16)
constexpr int64_t kKC = 256;  // columns per panel slice
constexpr int64_t kMC = 144;  // rows of x per block (multiple of kMR)
constexpr int64_t kGemvMaxT = 8;

float* scratch(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// ---- scalar ---------------------------------------------------------------------------------------------

float dot_scalar(const float* a, const float* b, int64_t n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
  float r = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
  for (; i < n; i++) r += a[i] * b[i];
  return r;
}

void matmul_rows_scalar(float* out, int64_t ldo, const float* x, int64_t ldx, int64_t T, const Weight& w,
                        int64_t r0, int64_t r1) {
  static thread_local std::vector<float> rowbuf;
  float* row = scratch(rowbuf, static_cast<size_t>(w.cols));
  for (int64_t r = r0; r < r1; r++) {
    dequant_row(w, r, 0, w.cols, row);
    for (int64_t t = 0; t < T; t++) out[t * ldo + (r - r0)] = dot_scalar(x + t * ldx, row, w.cols);
  }
}

#if GLANCE_X86
// ---- AVX2 GEMV ------------------------------------------------------------------------------------------

template <DType D>
GLANCE_AVX2 inline __m256 wload8(const uint8_t* row, int64_t c) {
  if constexpr (D == DType::F32) return load8_f32(row + c * 4);
  if constexpr (D == DType::BF16) return load8_bf16(row + c * 2);
  if constexpr (D == DType::F16) return load8_f16(row + c * 2);
  return load8_e4m3_f16(row + c);  // value * 2^-8, see dequant_simd.h
}

// Scalar weight, FP8 without its block scale.
template <DType D>
inline float wload1(const uint8_t* row, int64_t c) {
  if constexpr (D == DType::F32) return load_f32(row + c * 4);
  if constexpr (D == DType::BF16) return bf16_to_f32(load_u16(row + c * 2));
  if constexpr (D == DType::F16) return f16_to_f32(load_u16(row + c * 2));
  return e4m3_to_f32(row[c]);
}

// 16 weights at column c as two times 8 fp32.
template <DType D>
GLANCE_AVX2 inline void wload16(const uint8_t* row, int64_t c, __m256& lo, __m256& hi) {
  if constexpr (D == DType::F8_E4M3) {
    load16_e4m3_f16(row + c, lo, hi);
  } else {
    lo = wload8<D>(row, c);
    hi = wload8<D>(row, c + 8);
  }
}

// Bytes ahead of each weight-row stream that the GEMV prefetches. The R rows of a tile are contiguous, so rows of
// at most 1 KB make one stream with the next tile's rows: 2 KB ahead covers a whole next tile. Longer rows are R
// streams of their own, and R x 512 (e4m3) or R x 768 bytes in flight serve them best. Measured at T = 1, 2 cores,
// the matrices coming from DRAM (GB/s, old distance -> this one): e4m3 rows of 512 B 7.9 -> 16.2, of 1 KB
// 10.4 -> 16.2, bf16 rows of 1 KB 17.2 -> 22.1; 2 KB ahead of longer rows was slower (e4m3 rows of 2 KB 13.1 -> 11.4,
// of 7 KB 17.8 -> 16.0; bf16 rows of 4 KB 24.2 -> 21.8). Prefetches never fault: running past a weight's end is
// harmless.
inline int64_t gemv_prefetch_ahead(int64_t row_bytes, bool e4m3) {
  return row_bytes <= 1024 ? 2048 : (e4m3 ? 512 : 768);
}

// acc[i][t] += sum over columns [c, ce) of W[row i][col] * x[t][col]  (FP8: without the block scale; NaN codes
// stay NaN).
template <DType D, int T, int R>
GLANCE_AVX2 inline void gemv_span(__m256 (&acc)[R][T], float (&tail)[R][T], const uint8_t* const* rows,
                                  const float* x, int64_t ldx, int64_t c, int64_t ce, int64_t ahead) {
  constexpr int64_t kBytes = D == DType::F32 ? 4 : D == DType::F8_E4M3 ? 1 : 2;
  for (; c + 16 <= ce; c += 16) {
    for (int i = 0; i < R; i++) {
      // Software prefetch ahead of each row stream: small matrices (a few hundred KB, most of a decode step)
      // come from DRAM with too few misses in flight for the hardware prefetchers alone.
      if ((c * kBytes) % 64 == 0) prefetch_far(rows[i] + c * kBytes + ahead);
      __m256 lo, hi;
      wload16<D>(rows[i], c, lo, hi);
      for (int t = 0; t < T; t++) {
        acc[i][t] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x + t * ldx + c), acc[i][t]);
        acc[i][t] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(x + t * ldx + c + 8), acc[i][t]);
      }
    }
  }
  for (; c + 8 <= ce; c += 8) {
    for (int i = 0; i < R; i++) {
      const __m256 wv = wload8<D>(rows[i], c);
      for (int t = 0; t < T; t++) acc[i][t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + t * ldx + c), acc[i][t]);
    }
  }
  for (; c < ce; c++) {
    for (int i = 0; i < R; i++) {
      const float wi = wload1<D>(rows[i], c);
      for (int t = 0; t < T; t++) tail[i][t] += wi * x[t * ldx + c];
    }
  }
}

// The FP8 span of one 128-column block, fast: 32 columns per step decoded with decode32_e4m3_f16_nonan (NaN codes
// come out finite) while e4m3_nan_track watches for NaN codes; the rest as gemv_span. Returns false if the span
// held a NaN code: acc / tail are then wrong and the caller recomputes the block with gemv_span.
template <int T, int R>
GLANCE_AVX2 inline bool gemv_span_fp8(__m256 (&acc)[R][T], float (&tail)[R][T], const uint8_t* const* rows,
                                      const float* x, int64_t ldx, int64_t c, int64_t ce, int64_t ahead) {
  __m256i nan = _mm256_setzero_si256();
  for (; c + 32 <= ce; c += 32) {
    for (int i = 0; i < R; i++) {
      prefetch_far(rows[i] + c + ahead);
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[i] + c));
      nan = e4m3_nan_track(nan, b);
      __m256 v0, v1, v2, v3;
      decode32_e4m3_f16_nonan(b, v0, v1, v2, v3);
      for (int t = 0; t < T; t++) {
        const float* xt = x + t * ldx + c;
        acc[i][t] = _mm256_fmadd_ps(v0, _mm256_loadu_ps(xt), acc[i][t]);
        acc[i][t] = _mm256_fmadd_ps(v1, _mm256_loadu_ps(xt + 8), acc[i][t]);
        acc[i][t] = _mm256_fmadd_ps(v2, _mm256_loadu_ps(xt + 16), acc[i][t]);
        acc[i][t] = _mm256_fmadd_ps(v3, _mm256_loadu_ps(xt + 24), acc[i][t]);
      }
    }
  }
  gemv_span<DType::F8_E4M3, T, R>(acc, tail, rows, x, ldx, c, ce, ahead);
  return !e4m3_nan_seen(nan);
}

// R consecutive weight rows starting at r, all T rows of x: out[t*ldo + i] for i < R. Each weight vector is
// decoded once and used for all T tokens; the x vectors come from L1 (memory operands of the FMAs).
// FP8: per 128-column block, the block's sums are scaled and added to running sums kept in memory (touched
// once per block), so that only the block accumulators occupy registers.
template <DType D, int T, int R>
GLANCE_AVX2 void gemv_tile(float* out, int64_t ldo, const float* x, int64_t ldx, const Weight& w, int64_t r,
                           int64_t k0, int64_t K, bool accumulate) {
  const uint8_t* rows[R];
  for (int i = 0; i < R; i++) rows[i] = w.row(r + i);
  const int64_t ahead = gemv_prefetch_ahead(w.cols * static_cast<int64_t>(dtype_size(D)), D == DType::F8_E4M3);
  __m256 acc[R][T];
  float tail[R][T];
  for (int i = 0; i < R; i++)
    for (int t = 0; t < T; t++) {
      acc[i][t] = _mm256_setzero_ps();
      tail[i][t] = 0.0f;
    }
  float* o[T];
  for (int t = 0; t < T; t++) o[t] = out + t * ldo;
  if constexpr (D != DType::F8_E4M3) {
    gemv_span<D, T, R>(acc, tail, rows, x, ldx, k0, K, ahead);
    for (int i = 0; i < R; i++)
      for (int t = 0; t < T; t++) o[t][i] = (accumulate ? o[t][i] : 0.0f) + (hsum256(acc[i][t]) + tail[i][t]);
  } else {
    alignas(32) float total[R][T][8];
    float ttotal[R][T];
    for (int i = 0; i < R; i++)
      for (int t = 0; t < T; t++) {
        _mm256_store_ps(total[i][t], _mm256_setzero_ps());
        ttotal[i][t] = 0.0f;
      }
    for (int64_t cb = k0; cb < K; cb += kFp8Block) {
      for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) {
          acc[i][t] = _mm256_setzero_ps();
          tail[i][t] = 0.0f;
        }
      const int64_t ce = std::min(K, cb + kFp8Block);
      if (!gemv_span_fp8<T, R>(acc, tail, rows, x, ldx, cb, ce, ahead)) {  // a NaN code: again, NaN-preserving
        for (int i = 0; i < R; i++)
          for (int t = 0; t < T; t++) {
            acc[i][t] = _mm256_setzero_ps();
            tail[i][t] = 0.0f;
          }
        gemv_span<D, T, R>(acc, tail, rows, x, ldx, cb, ce, ahead);
      }
      for (int i = 0; i < R; i++) {
        const float s = w.block_scale(r + i, cb);
        const __m256 vs = _mm256_set1_ps(s * kE4M3F16Fix);
        for (int t = 0; t < T; t++) {
          _mm256_store_ps(total[i][t], _mm256_fmadd_ps(acc[i][t], vs, _mm256_load_ps(total[i][t])));
          ttotal[i][t] += tail[i][t] * s;
        }
      }
    }
    for (int i = 0; i < R; i++)
      for (int t = 0; t < T; t++)
        o[t][i] = (accumulate ? o[t][i] : 0.0f) + (hsum256(_mm256_load_ps(total[i][t])) + ttotal[i][t]);
  }
}

// Rows of W per tile for T tokens: R*T accumulators, at most 12 of the 16 ymm registers.
template <int T>
constexpr int gemv_rows_per_tile() {
  return T <= 3 ? 4 : (T == 4 ? 3 : (T <= 6 ? 2 : 1));
}

// Rows [r0, r1): tiles of R rows, then single rows.
// T = 5..8 run as T = 4 plus T - 4 over the same tile of rows: the tile's weights are read from memory once
// and again from cache, while a single pass with R = 1 would load T x vectors per weight vector from L2.
template <DType D, int T>
GLANCE_AVX2 void gemv_rows(float* out, int64_t ldo, const float* x, int64_t ldx, const Weight& w, int64_t r0,
                           int64_t r1) {
  const int64_t K = w.cols;
  if constexpr (T > 4) {
    constexpr int R = 3;
    int64_t r = r0;
    for (; r + R <= r1; r += R) {
      gemv_tile<D, 4, R>(out + (r - r0), ldo, x, ldx, w, r, 0, K, false);
      gemv_tile<D, T - 4, R>(out + 4 * ldo + (r - r0), ldo, x + 4 * ldx, ldx, w, r, 0, K, false);
    }
    for (; r < r1; r++) gemv_tile<D, T, 1>(out + (r - r0), ldo, x, ldx, w, r, 0, K, false);
  } else {
    constexpr int R = gemv_rows_per_tile<T>();
    int64_t r = r0;
    for (; r + R <= r1; r += R) gemv_tile<D, T, R>(out + (r - r0), ldo, x, ldx, w, r, 0, K, false);
    for (; r < r1; r++) gemv_tile<D, T, 1>(out + (r - r0), ldo, x, ldx, w, r, 0, K, false);
  }
}

using GemvFn = void (*)(float*, int64_t, const float*, int64_t, const Weight&, int64_t, int64_t);

template <DType D>
GemvFn gemv_for(int64_t T) {
  switch (T) {
    case 1: return gemv_rows<D, 1>;
    case 2: return gemv_rows<D, 2>;
    case 3: return gemv_rows<D, 3>;
    case 4: return gemv_rows<D, 4>;
    case 5: return gemv_rows<D, 5>;
    case 6: return gemv_rows<D, 6>;
    case 7: return gemv_rows<D, 7>;
    default: return gemv_rows<D, 8>;
  }
}

GemvFn gemv_fn(DType d, int64_t T) {
  switch (d) {
    case DType::F32: return gemv_for<DType::F32>(T);
    case DType::BF16: return gemv_for<DType::BF16>(T);
    case DType::F16: return gemv_for<DType::F16>(T);
    case DType::F8_E4M3: return gemv_for<DType::F8_E4M3>(T);
  }
  return nullptr;
}

// ---- AVX2 GEMM ------------------------------------------------------------------------------------------

// pack[s][k][j] = W[r0 + 16 s + j][k0 + k] for s < ceil(nr/16), k < kc, j < 16; rows >= nr are zero.
void pack_panel(const Weight& w, int64_t r0, int64_t nr, int64_t k0, int64_t kc, float* pack, float* rowbuf) {
  const int64_t strips = (nr + kNR - 1) / kNR;
  for (int64_t s = 0; s < strips; s++) {
    float* dst = pack + s * kc * kNR;
    for (int64_t j = 0; j < kNR; j++) {
      const int64_t r = s * kNR + j;
      if (r < nr) {
        dequant_row(w, r0 + r, k0, kc, rowbuf);
        for (int64_t k = 0; k < kc; k++) dst[k * kNR + j] = rowbuf[k];
      } else {
        for (int64_t k = 0; k < kc; k++) dst[k * kNR + j] = 0.0f;
      }
    }
  }
}

void gemm_rows_avx2(float* out, int64_t ldo, const float* x, int64_t ldx, int64_t T, const Weight& w, int64_t r0,
                    int64_t r1) {
  static thread_local std::vector<float> packbuf, rowbuf;
  float* pack = scratch(packbuf, static_cast<size_t>(kNC * kKC));
  float* row = scratch(rowbuf, static_cast<size_t>(kKC));
  const int64_t K = w.cols;
  for (int64_t nb = r0; nb < r1; nb += kNC) {
    const int64_t nr = std::min(kNC, r1 - nb);
    const int64_t strips = (nr + kNR - 1) / kNR;
    for (int64_t kb = 0; kb < K; kb += kKC) {
      const int64_t kc = std::min(kKC, K - kb);
      pack_panel(w, nb, nr, kb, kc, pack, row);
      for (int64_t mb = 0; mb < T; mb += kMC) {
        const int64_t me = std::min(T, mb + kMC);
        for (int64_t s = 0; s < strips; s++) {
          const int nvalid = static_cast<int>(std::min<int64_t>(kNR, nr - s * kNR));
          const float* B = pack + s * kc * kNR;
          for (int64_t i = mb; i < me; i += kMR) {
            const int mr = static_cast<int>(std::min<int64_t>(kMR, me - i));
            ukernel_avx2(mr, kc, x + i * ldx + kb, ldx, B, kNR, out + i * ldo + (nb - r0) + s * kNR, ldo, nvalid,
                         kb > 0);
          }
        }
      }
    }
  }
}
#endif

}  // namespace

// out[t*ldo + (r - r0)] = x[t*ldx + :] . W[r] for t < T, r0 <= r < r1; serial (contract in kernels.h).
void matmul_rows(float* out, int64_t ldo, const float* x, int64_t ldx, int64_t T, const Weight& w, int64_t r0,
                 int64_t r1) {
  if (T <= 0 || r1 <= r0) return;
  if (w.cols == 0) {
    for (int64_t t = 0; t < T; t++) std::fill(out + t * ldo, out + t * ldo + (r1 - r0), 0.0f);
    return;
  }
#if GLANCE_X86
  if (use_avx2()) {
    if (T <= kGemvMaxT) return gemv_fn(w.dtype, T)(out, ldo, x, ldx, w, r0, r1);
    return gemm_rows_avx2(out, ldo, x, ldx, T, w, r0, r1);
  }
#endif
  matmul_rows_scalar(out, ldo, x, ldx, T, w, r0, r1);
}

// out[T, rows] = x[T, cols] . W^T (contract in kernels.h). T <= 8: GEMV over groups of 4 rows per thread;
// T > 8: GEMM over (64-row panel, slice of T) items.
void matmul(float* out, const float* x, int64_t T, const Weight& w) {
  const int64_t N = w.rows, K = w.cols;
  if (T <= 0 || N <= 0) return;
  if (K == 0) {  // empty sums
    std::fill(out, out + T * N, 0.0f);
    return;
  }
  const int64_t work = T * N * (K > 0 ? K : 1);
#if GLANCE_X86
  const bool gemm = T > kGemvMaxT && use_avx2();
#else
  const bool gemm = false;
#endif
  if (!gemm) {
    // Groups of 4 rows, contiguous per thread.
    const int64_t groups = (N + 3) / 4;
    parallel_for(
        groups,
        [&](int64_t b, int64_t e) {
          const int64_t r0 = b * 4, r1 = std::min(N, e * 4);
          if (T <= kGemvMaxT) {
            matmul_rows(out + r0, N, x, K, T, w, r0, r1);
          } else {  // scalar, larger T: tokens in blocks so that x stays in cache
            for (int64_t t0 = 0; t0 < T; t0 += 64) {
              const int64_t tn = std::min<int64_t>(64, T - t0);
              matmul_rows(out + t0 * N + r0, N, x + t0 * K, K, tn, w, r0, r1);
            }
          }
        },
        // Decode GEMVs are bound by memory, not arithmetic: even a 100 KB matrix streams faster from DRAM on
        // every core than on one, so the grain is small.
        threads_for(work, T <= kGemvMaxT ? 1 << 13 : 1 << 16));
    return;
  }
#if GLANCE_X86
  // GEMM: items = (row panel, slice of T). Split T only when there are too few panels to share out.
  const int64_t P = pool_threads();
  const int64_t panels = (N + kNC - 1) / kNC;
  int64_t mparts = 1;
  if (panels < 4 * P) mparts = std::min<int64_t>((4 * P + panels - 1) / panels, (T + kMR - 1) / kMR);
  const int64_t items = panels * mparts;
  parallel_for(
      items,
      [&](int64_t b, int64_t e) {
        for (int64_t it = b; it < e; it++) {
          const int64_t p = it / mparts, mp = it % mparts;
          // slices of T aligned to the micro-kernel height
          const int64_t tiles = (T + kMR - 1) / kMR;
          const int64_t t0 = std::min(T, tiles * mp / mparts * kMR), t1 = std::min(T, tiles * (mp + 1) / mparts * kMR);
          const int64_t r0 = p * kNC, r1 = std::min(N, r0 + kNC);
          // gemm directly, also for a short slice: a row's result must not depend on how T was sliced
          // (slices start on multiples of kMR, so the micro-kernel tiles are the same for any thread count)
          if (t1 > t0) gemm_rows_avx2(out + t0 * N + r0, N, x + t0 * K, K, t1 - t0, w, r0, r1);
        }
      },
      threads_for(work, 1 << 16));
#endif
}

// out[i, :] = W[ids[i], :] dequantised, for i < n (ids already range-checked).
void embedding(float* out, const int32_t* ids, int64_t n, const Weight& w) {
  const int64_t C = w.cols;
  parallel_for(
      n,
      [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; i++) dequant_row(w, ids[i], 0, C, out + i * C);
      },
      threads_for(n * C, 1 << 16));
}

// out[rows, cols] = W dequantised.
void to_float32(float* out, const Weight& w) {
  const int64_t R = w.rows, C = w.cols;
  parallel_for(
      R,
      [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; r++) dequant_row(w, r, 0, C, out + r * C);
      },
      threads_for(R * C, 1 << 16));
}

}  // namespace glance
