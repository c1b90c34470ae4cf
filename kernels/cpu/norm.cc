// RMSNorm and LayerNorm over rows of `dim` (fp32; statistics with 8 partial sums so the compiler vectorises).
#include <cmath>

#include "kernels.h"
#include "thread_pool.h"

namespace glance {

namespace {

float sum8(const float* x, int64_t n, float shift, bool square) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  if (square) {
    for (; i + 8 <= n; i += 8)
      for (int j = 0; j < 8; j++) {
        const float d = x[i + j] - shift;
        s[j] += d * d;
      }
  } else {
    for (; i + 8 <= n; i += 8)
      for (int j = 0; j < 8; j++) s[j] += x[i + j];
  }
  float r = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
  for (; i < n; i++) {
    const float d = x[i] - shift;
    r += square ? d * d : x[i];
  }
  return r;
}

}  // namespace

// out[t] = x[t] * rsqrt(mean(x[t]^2) + eps) * weight, rows of dim; out may be x.
void rms_norm(float* out, const float* x, int64_t T, int64_t dim, const float* weight, float eps) {
  parallel_for(
      T,
      [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; t++) {
          const float* xr = x + t * dim;
          float* o = out + t * dim;
          const float ms = dim > 0 ? sum8(xr, dim, 0.0f, true) / static_cast<float>(dim) : 0.0f;
          const float r = 1.0f / std::sqrt(ms + eps);
          for (int64_t i = 0; i < dim; i++) o[i] = xr[i] * r * weight[i];
        }
      },
      threads_for(T * dim, 1 << 15));
}

// out[t] = (x[t] - mean) * rsqrt(var + eps) * weight + bias (biased variance, two passes); out may be x.
void layer_norm(float* out, const float* x, int64_t T, int64_t dim, const float* weight, const float* bias,
                float eps) {
  parallel_for(
      T,
      [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; t++) {
          const float* xr = x + t * dim;
          float* o = out + t * dim;
          const float n = static_cast<float>(dim > 0 ? dim : 1);
          const float mean = sum8(xr, dim, 0.0f, false) / n;
          const float var = sum8(xr, dim, mean, true) / n;
          const float r = 1.0f / std::sqrt(var + eps);
          for (int64_t i = 0; i < dim; i++) o[i] = (xr[i] - mean) * r * weight[i] + bias[i];
        }
      },
      threads_for(T * dim, 1 << 15));
}

}  // namespace glance
