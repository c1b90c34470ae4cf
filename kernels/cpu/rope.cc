// Rotary position embedding, in place, interleaved (MLA) or half-split / NeoX (lightning indexer).
//
// The angle is the fp32 product positions[t] * invFreq[i], as HF computes it (inv_freq @ position_ids in
// fp32); its cos and sin are evaluated in double and rounded, then scaled by attentionFactor (YaRN mscale).
#include <cmath>
#include <vector>

#include "kernels.h"
#include "thread_pool.h"

namespace glance {

// In place on x [T, nHeads, headStride], dims [offset, offset + ropeDim) of every head: pairs (2i, 2i+1)
// (interleaved) or (i, i + ropeDim/2) rotated by theta = positions[t] * invFreq[i], cos/sin times
// attentionFactor: (a, b) -> (a cos - b sin, a sin + b cos). Tokens in parallel.
void rope(float* x, int64_t T, int64_t nHeads, int64_t headStride, int64_t offset, int64_t ropeDim,
          const int32_t* positions, const float* invFreq, float attentionFactor, bool interleaved) {
  const int64_t half = ropeDim / 2;
  if (T <= 0 || nHeads <= 0 || half <= 0) return;
  parallel_for(
      T,
      [&](int64_t b, int64_t e) {
        std::vector<float> cs(static_cast<size_t>(2 * half));
        float* cosv = cs.data();
        float* sinv = cs.data() + half;
        for (int64_t t = b; t < e; t++) {
          const float pos = static_cast<float>(positions[t]);
          for (int64_t i = 0; i < half; i++) {
            const float theta = pos * invFreq[i];
            cosv[i] = static_cast<float>(std::cos(static_cast<double>(theta))) * attentionFactor;
            sinv[i] = static_cast<float>(std::sin(static_cast<double>(theta))) * attentionFactor;
          }
          for (int64_t h = 0; h < nHeads; h++) {
            float* v = x + (t * nHeads + h) * headStride + offset;
            if (interleaved) {
              for (int64_t i = 0; i < half; i++) {
                const float a = v[2 * i], bb = v[2 * i + 1];
                v[2 * i] = a * cosv[i] - bb * sinv[i];
                v[2 * i + 1] = a * sinv[i] + bb * cosv[i];
              }
            } else {
              for (int64_t i = 0; i < half; i++) {
                const float a = v[i], bb = v[i + half];
                v[i] = a * cosv[i] - bb * sinv[i];
                v[i + half] = a * sinv[i] + bb * cosv[i];
              }
            }
          }
        }
      },
      threads_for(T * nHeads * ropeDim, 1 << 15));
}

}  // namespace glance
