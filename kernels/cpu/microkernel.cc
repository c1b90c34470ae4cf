#include "microkernel.h"

#include "simd.h"

namespace glance {

#if GLANCE_X86
// One row of the tile. Takes the accumulators by value: passing the accumulator arrays by reference makes GCC
// keep them in memory and store them on every k iteration.
GLANCE_AVX2 static inline void store_row(float* ci, __m256 a, __m256 b, int nvalid, bool accumulate) {
  if (nvalid == kNR) {
    if (accumulate) {
      a = _mm256_add_ps(a, _mm256_loadu_ps(ci));
      b = _mm256_add_ps(b, _mm256_loadu_ps(ci + 8));
    }
    _mm256_storeu_ps(ci, a);
    _mm256_storeu_ps(ci + 8, b);
    return;
  }
  alignas(32) float tmp[kNR];
  _mm256_store_ps(tmp, a);
  _mm256_store_ps(tmp + 8, b);
  if (accumulate) {
    for (int j = 0; j < nvalid; j++) ci[j] += tmp[j];
  } else {
    for (int j = 0; j < nvalid; j++) ci[j] = tmp[j];
  }
}

template <int MR>
GLANCE_AVX2 static void ukernel(int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                                int64_t ldc, int nvalid, bool accumulate) {
  __m256 c0[MR], c1[MR];
  for (int i = 0; i < MR; i++) c0[i] = c1[i] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k++) {
    const __m256 b0 = _mm256_loadu_ps(B + k * ldb);
    const __m256 b1 = _mm256_loadu_ps(B + k * ldb + 8);
    for (int i = 0; i < MR; i++) {
      const __m256 a = _mm256_broadcast_ss(A + i * lda + k);
      c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
    }
  }
  for (int i = 0; i < MR; i++) store_row(C + i * ldc, c0[i], c1[i], nvalid, accumulate);
}

// One row: two k chains so that four accumulators hide the FMA latency.
GLANCE_AVX2 static void ukernel1(int64_t K, const float* A, const float* B, int64_t ldb, float* C, int nvalid,
                                 bool accumulate) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 2 <= K; k += 2) {
    const __m256 x0 = _mm256_broadcast_ss(A + k);
    const __m256 x1 = _mm256_broadcast_ss(A + k + 1);
    a0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(B + k * ldb), a0);
    a1 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(B + k * ldb + 8), a1);
    b0 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(B + (k + 1) * ldb), b0);
    b1 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(B + (k + 1) * ldb + 8), b1);
  }
  if (k < K) {
    const __m256 x0 = _mm256_broadcast_ss(A + k);
    a0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(B + k * ldb), a0);
    a1 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(B + k * ldb + 8), a1);
  }
  store_row(C, _mm256_add_ps(a0, b0), _mm256_add_ps(a1, b1), nvalid, accumulate);
}

void ukernel_avx2(int mr, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                  int64_t ldc, int nvalid, bool accumulate) {
  switch (mr) {
    case 1: return ukernel1(K, A, B, ldb, C, nvalid, accumulate);
    case 2: return ukernel<2>(K, A, lda, B, ldb, C, ldc, nvalid, accumulate);
    case 3: return ukernel<3>(K, A, lda, B, ldb, C, ldc, nvalid, accumulate);
    case 4: return ukernel<4>(K, A, lda, B, ldb, C, ldc, nvalid, accumulate);
    case 5: return ukernel<5>(K, A, lda, B, ldb, C, ldc, nvalid, accumulate);
    default: return ukernel<6>(K, A, lda, B, ldb, C, ldc, nvalid, accumulate);
  }
}
#else
void ukernel_avx2(int, int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t, int, bool) {}
#endif

}  // namespace glance
