// Elementwise ops: siluMul (the SwiGLU of the MLPs and experts).
#include <algorithm>
#include <cmath>

#include "kernels.h"
#include "simd.h"
#include "thread_pool.h"
#include "vec_math.h"

namespace glance {

namespace {

void silu_mul_scalar(float* out, const float* g, const float* u, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; i++) out[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

#if GLANCE_X86
GLANCE_AVX2 void silu_mul_avx2(float* out, const float* g, const float* u, int64_t b, int64_t e) {
  int64_t i = b;
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (; i + 8 <= e; i += 8) {
    const __m256 gv = _mm256_loadu_ps(g + i);
    const __m256 den = _mm256_add_ps(one, exp256(_mm256_xor_ps(gv, sign)));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(gv, den), _mm256_loadu_ps(u + i)));
  }
  silu_mul_scalar(out, g, u, i, e);
}
#endif

}  // namespace

// out[i] = gate[i] / (1 + exp(-gate[i])) * up[i] for i < n; out may be gate or up. Chunks of 64 across threads.
void silu_mul(float* out, const float* gate, const float* up, int64_t n) {
  parallel_for(
      (n + 63) / 64,
      [&](int64_t b, int64_t e) {
        const int64_t i0 = b * 64, i1 = std::min(n, e * 64);
#if GLANCE_X86
        if (use_avx2()) return silu_mul_avx2(out, gate, up, i0, i1);
#endif
        silu_mul_scalar(out, gate, up, i0, i1);
      },
      threads_for(n, 1 << 15));
}

}  // namespace glance
