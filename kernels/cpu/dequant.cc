// Dequantisation of weight rows to fp32: the one place that knows every storage type's bit layout.
// Used by embedding, toFloat32, the GEMM panel packer and the MLA absorption; the GEMV in matmul.cc has its
// own fused copy of the same conversions (dequantise + FMA without a round trip through memory).
#include <algorithm>

#include "dequant_simd.h"
#include "dtype.h"
#include "simd.h"

namespace glance {

// ---- FP8 e4m3fn lookup table (built at compile time; every entry is exact in fp32) ----------------------
static constexpr float e4m3_decode(int b) {
  const bool neg = (b & 0x80) != 0;
  const int e = (b >> 3) & 0xf;
  const int m = b & 0x7;
  float v = 0.0f;
  if (e == 0xf && m == 0x7) {
    v = __builtin_nanf("");
  } else if (e == 0) {
    v = static_cast<float>(m) * (1.0f / 512.0f);  // subnormal: m/8 * 2^-6
  } else {
    float p = 1.0f;
    for (int i = 7; i < e; i++) p *= 2.0f;
    for (int i = e; i < 7; i++) p *= 0.5f;
    v = (1.0f + static_cast<float>(m) / 8.0f) * p;
  }
  return neg ? -v : v;
}

static constexpr E4M3Lut make_e4m3_lut() {
  E4M3Lut t{};
  for (int i = 0; i < 256; i++) t.v[i] = e4m3_decode(i);
  return t;
}

const E4M3Lut kE4M3Lut = make_e4m3_lut();

// ---- scalar -----------------------------------------------------------------------------------------------
static void dequant_row_scalar(const Weight& w, int64_t r, int64_t c0, int64_t n, float* dst) {
  const uint8_t* row = w.row(r);
  switch (w.dtype) {
    case DType::F32:
      std::memcpy(dst, row + c0 * 4, static_cast<size_t>(n) * 4);
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32(load_u16(row + (c0 + i) * 2));
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; i++) dst[i] = f16_to_f32(load_u16(row + (c0 + i) * 2));
      break;
    case DType::F8_E4M3: {
      int64_t c = c0;
      const int64_t end = c0 + n;
      while (c < end) {
        const int64_t be = std::min<int64_t>(end, (c / kFp8Block + 1) * kFp8Block);
        const float s = w.block_scale(r, c);
        for (; c < be; c++) dst[c - c0] = e4m3_to_f32(row[c]) * s;
      }
      break;
    }
  }
}

// ---- AVX2 -------------------------------------------------------------------------------------------------
#if GLANCE_X86
GLANCE_AVX2 static void dequant_row_avx2(const Weight& w, int64_t r, int64_t c0, int64_t n, float* dst) {
  const uint8_t* row = w.row(r);
  int64_t i = 0;
  switch (w.dtype) {
    case DType::F32:
      std::memcpy(dst, row + c0 * 4, static_cast<size_t>(n) * 4);
      return;
    case DType::BF16:
      for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8_bf16(row + (c0 + i) * 2));
      for (; i < n; i++) dst[i] = bf16_to_f32(load_u16(row + (c0 + i) * 2));
      return;
    case DType::F16:
      for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8_f16(row + (c0 + i) * 2));
      for (; i < n; i++) dst[i] = f16_to_f32(load_u16(row + (c0 + i) * 2));
      return;
    case DType::F8_E4M3: {
      int64_t c = c0;
      const int64_t end = c0 + n;
      while (c < end) {
        const int64_t be = std::min<int64_t>(end, (c / kFp8Block + 1) * kFp8Block);
        const float s = w.block_scale(r, c);
        const __m256 vs = _mm256_set1_ps(s * kE4M3F16Fix);
        for (; c + 32 <= be; c += 32) {  // 32 at a time; NaN codes (rare) through the NaN-preserving decode
          const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c));
          float* o = dst + (c - c0);
          if (e4m3_nan_seen(e4m3_nan_track(_mm256_setzero_si256(), b))) {
            for (int j = 0; j < 32; j += 8) _mm256_storeu_ps(o + j, _mm256_mul_ps(load8_e4m3_f16(row + c + j), vs));
            continue;
          }
          __m256 v0, v1, v2, v3;
          decode32_e4m3_f16_nonan(b, v0, v1, v2, v3);
          _mm256_storeu_ps(o, _mm256_mul_ps(v0, vs));
          _mm256_storeu_ps(o + 8, _mm256_mul_ps(v1, vs));
          _mm256_storeu_ps(o + 16, _mm256_mul_ps(v2, vs));
          _mm256_storeu_ps(o + 24, _mm256_mul_ps(v3, vs));
        }
        for (; c + 8 <= be; c += 8) _mm256_storeu_ps(dst + (c - c0), _mm256_mul_ps(load8_e4m3_f16(row + c), vs));
        for (; c < be; c++) dst[c - c0] = e4m3_to_f32(row[c]) * s;
      }
      return;
    }
  }
}
#endif

// dst[i] = W[r][c0 + i] in fp32 for i < n (FP8 with its block scale). Serial.
void dequant_row(const Weight& w, int64_t r, int64_t c0, int64_t n, float* dst) {
#if GLANCE_X86
  if (use_avx2()) return dequant_row_avx2(w, r, c0, n, dst);
#endif
  dequant_row_scalar(w, r, c0, n, dst);
}

}  // namespace glance
