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

// The accumulators are named variables, not arrays: GCC keeps an array of __m256 indexed in the k loop in
// memory and stores it on every iteration.
#define GLANCE_UK_ROW(i)                                              \
  if constexpr (MR > i) {                                            \
    const __m256 a = _mm256_broadcast_ss(A + i * lda + k);           \
    c##i##0 = _mm256_fmadd_ps(a, b0, c##i##0);                       \
    c##i##1 = _mm256_fmadd_ps(a, b1, c##i##1);                       \
  }
#define GLANCE_UK_STORE(i) \
  if constexpr (MR > i) store_row(C + i * ldc, c##i##0, c##i##1, nvalid, accumulate);

template <int MR>
GLANCE_AVX2 static void ukernel(int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                                int64_t ldc, int nvalid, bool accumulate) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t k = 0; k < K; k++) {
    const __m256 b0 = _mm256_loadu_ps(B + k * ldb);
    const __m256 b1 = _mm256_loadu_ps(B + k * ldb + 8);
    GLANCE_UK_ROW(0)
    GLANCE_UK_ROW(1)
    GLANCE_UK_ROW(2)
    GLANCE_UK_ROW(3)
    GLANCE_UK_ROW(4)
    GLANCE_UK_ROW(5)
  }
  GLANCE_UK_STORE(0)
  GLANCE_UK_STORE(1)
  GLANCE_UK_STORE(2)
  GLANCE_UK_STORE(3)
  GLANCE_UK_STORE(4)
  GLANCE_UK_STORE(5)
}
#undef GLANCE_UK_ROW
#undef GLANCE_UK_STORE

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
