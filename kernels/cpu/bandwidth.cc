// measureReadBandwidth: the machine's sustained read bandwidth with every pool thread streaming at once,
// for roofline figures (a bandwidth-bound GEMV should reach most of it).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels.h"
#include "simd.h"
#include "thread_pool.h"

namespace glance {

namespace {

volatile float g_sink;

float sum_scalar(const float* p, int64_t n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t i = 0; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) s[j] += p[i + j];
  return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

#if GLANCE_X86
GLANCE_AVX2 float sum_avx2(const float* p, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
    a4 = _mm256_add_ps(a4, _mm256_load_ps(p + i + 32));
    a5 = _mm256_add_ps(a5, _mm256_load_ps(p + i + 40));
    a6 = _mm256_add_ps(a6, _mm256_load_ps(p + i + 48));
    a7 = _mm256_add_ps(a7, _mm256_load_ps(p + i + 56));
  }
  a0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                     _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
  return hsum256(a0);
}
#endif

float sum_floats(const float* p, int64_t n) {
#if GLANCE_X86
  if (use_avx2()) return sum_avx2(p, n);
#endif
  return sum_scalar(p, n);
}

}  // namespace

// GB/s (1e9 B/s) with every pool thread summing its own buffer of bytes_per_thread at once; the best of 6
// timed repetitions (after one warm-up). 0 if the buffers cannot be allocated.
double measure_read_bandwidth(int64_t bytes_per_thread) {
  const int P = pool_threads();
  const int64_t n = (bytes_per_thread / 256) * 64;  // floats, a multiple of 64
  if (n <= 0) return 0.0;
  std::vector<float*> bufs(static_cast<size_t>(P), nullptr);
  // One chunk per thread: each thread allocates and first-touches its own buffer.
  parallel_for(P, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      float* p = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(n) * 4));
      if (p != nullptr)
        for (int64_t j = 0; j < n; j++) p[j] = static_cast<float>(j & 1023);
      bufs[i] = p;
    }
  });
  for (float* p : bufs)
    if (p == nullptr) {
      for (float* q : bufs) std::free(q);
      return 0.0;
    }
  double best = 0.0;
  for (int rep = 0; rep < 7; rep++) {
    const auto t0 = std::chrono::steady_clock::now();
    parallel_for(P, [&](int64_t b, int64_t e) {
      float s = 0.0f;
      for (int64_t i = b; i < e; i++) s += sum_floats(bufs[i], n);
      g_sink = s;
    });
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rep > 0 && sec > 0) best = std::max(best, static_cast<double>(P) * static_cast<double>(n) * 4.0 / sec / 1e9);
  }
  for (float* p : bufs) std::free(p);
  return best;
}

}  // namespace glance
