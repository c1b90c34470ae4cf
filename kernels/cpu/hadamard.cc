// hadamardRows: the orthonormal Walsh-Hadamard transform of every row (DeepSeek V3.2's rotate_activation,
// fast_hadamard_transform(x, scale = D^-0.5)), in place.
//
// Natural (Sylvester) order: H_1 = [1], H_2n = [[H_n, H_n], [H_n, -H_n]], i.e. (H_D)[i][j] = (-1)^popcount(i & j).
// Computed as log2(D) butterfly passes over pairs (i, i + h), h = 1, 2, 4, ..., D/2, each (a, b) -> (a + b, a - b),
// then one multiply by fp32(D^-0.5). AVX2 does the h = 1, 2, 4 passes inside each 8-lane vector (in-lane permutes
// and a blend) and the rest across vectors; it performs the same additions on the same operands as the scalar
// body, so both give bit-identical results.
#include <cmath>

#include "kernels.h"
#include "simd.h"
#include "thread_pool.h"

namespace glance {

namespace {

void hadamard_row_scalar(float* x, int64_t D, float scale) {
  for (int64_t h = 1; h < D; h <<= 1) {
    for (int64_t i = 0; i < D; i += 2 * h) {
      for (int64_t j = i; j < i + h; j++) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
  for (int64_t j = 0; j < D; j++) x[j] *= scale;
}

#if GLANCE_X86
// D >= 8.
GLANCE_AVX2 void hadamard_row_avx2(float* x, int64_t D, float scale) {
  for (int64_t i = 0; i < D; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    // h = 1: lanes (0,1): even lane a + b, odd lane a - b (the swapped vector holds a in the odd lanes)
    __m256 s = _mm256_permute_ps(v, 0xB1);
    v = _mm256_blend_ps(_mm256_add_ps(v, s), _mm256_sub_ps(s, v), 0xAA);
    // h = 2: lanes (0,2), (1,3)
    s = _mm256_permute_ps(v, 0x4E);
    v = _mm256_blend_ps(_mm256_add_ps(v, s), _mm256_sub_ps(s, v), 0xCC);
    // h = 4: the two 128-bit halves
    s = _mm256_permute2f128_ps(v, v, 0x01);
    v = _mm256_blend_ps(_mm256_add_ps(v, s), _mm256_sub_ps(s, v), 0xF0);
    _mm256_storeu_ps(x + i, v);
  }
  for (int64_t h = 8; h < D; h <<= 1) {
    for (int64_t i = 0; i < D; i += 2 * h) {
      for (int64_t j = i; j < i + h; j += 8) {
        const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + h);
        _mm256_storeu_ps(x + j, _mm256_add_ps(a, b));
        _mm256_storeu_ps(x + j + h, _mm256_sub_ps(a, b));
      }
    }
  }
  const __m256 vs = _mm256_set1_ps(scale);
  for (int64_t i = 0; i < D; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vs));
}
#endif

}  // namespace

// x [N, D] in place, D a power of two: each row -> H_D row / sqrt(D) (Sylvester order). Rows across threads.
void hadamard_rows(float* x, int64_t N, int64_t D) {
  if (N <= 0 || D <= 0) return;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  int64_t lg = 0;
  while ((int64_t(1) << lg) < D) lg++;
  const bool avx2 = use_avx2() && D >= 8;
  parallel_for(
      N,
      [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; r++) {
#if GLANCE_X86
          if (avx2) {
            hadamard_row_avx2(x + r * D, D, scale);
            continue;
          }
#endif
          hadamard_row_scalar(x + r * D, D, scale);
        }
      },
      threads_for(N * D * (lg + 1), 1 << 16));
}

}  // namespace glance
