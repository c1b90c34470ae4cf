// quantizeFp8Rows: DeepSeek's act_quant with one block per row (block = D) and scale_fmt "ue8m0", the
// quantiser of the lightning indexer's keys and queries.
// quantizeLatentFp8 (quantize_latent_fp8): the rows of the FP8 MLA latent cache (kernels.h), with the same e4m3
// rounding (f32_to_e4m3) and a power-of-two scale per 128- or 64-column tile.
//
// Per row: amax = max(max |x|, fp32(1e-4)); scale = 2^ceil(log2(fp32(amax / 448))), found with frexp (exact, no
// pow/log2); out = e4m3fn(x / scale), rounded to nearest, ties to even, saturated to +-448 (|x / scale| <= 448
// anyway, as scale >= amax / 448). x / scale is computed as x * (1 / scale): both are exact powers of two, so it
// is the same correctly rounded number. The sign is kept (-0 -> 0x80).
//
// fp32 -> e4m3fn with integer operations only (independent of the MXCSR rounding mode; AVX2 and scalar bodies
// are the same arithmetic and give identical bytes). For a = |v| with fp32 bits u and biased exponent E = u >> 23:
//   E >= 121 (a >= 2^-6, normal e4m3): round the 23-bit mantissa to 3 bits, ties to even, by adding
//     0x7FFFF + bit 20 and dropping 20 bits; what is left is E << 3 | m (a carry bumps E), and the e4m3 code is
//     that minus (127 - 7) << 3.
//   E <= 120 (a < 2^-6, subnormal e4m3 or zero): the code is a / 2^-9 rounded to an integer 0..8, i.e. the
//     24-bit significand (implicit 1 included) shifted right by 141 - E, ties to even (8 is the smallest normal).
// A row holding a NaN or an infinity has no meaningful scale: its scale is NaN and every byte the NaN code 0x7F.
#include <cmath>
#include <cstring>
#include <limits>

#include "dtype.h"
#include "kernels.h"
#include "simd.h"
#include "thread_pool.h"

namespace glance {

namespace {

constexpr float kE4M3Max = 448.0f;
constexpr uint32_t kE4M3MaxBits = 0x43E00000u;  // 448.0f
constexpr uint8_t kE4M3NaN = 0x7F;

// |v| <= 448 or not, v finite.
inline uint8_t f32_to_e4m3(float v) {
  uint32_t u = f32_to_bits(v);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  u &= 0x7FFFFFFFu;
  if (u > kE4M3MaxBits) u = kE4M3MaxBits;
  const uint32_t E = u >> 23;
  uint32_t code;
  if (E >= 121) {
    code = ((u + 0x7FFFFu + ((u >> 20) & 1u)) >> 20) - (120u << 3);
  } else {
    const uint32_t sh = 141 - E;  // >= 21
    if (sh >= 32) {
      code = 0;
    } else {
      const uint32_t mant = (u & 0x7FFFFFu) | 0x800000u;
      code = (mant + ((1u << (sh - 1)) - 1u) + ((mant >> sh) & 1u)) >> sh;
    }
  }
  return static_cast<uint8_t>(code | sign);
}

// 2^ceil(log2(amax / 448)) for amax >= 1e-4 finite.
float ue8m0_scale(float amax) {
  const float ratio = amax / kE4M3Max;
  int e = 0;
  const float m = std::frexp(ratio, &e);  // ratio = m * 2^e, m in [0.5, 1)
  return std::ldexp(1.0f, m == 0.5f ? e - 1 : e);
}

constexpr float kAmaxFloor = 1e-4f;

void quantize_row_scalar(uint8_t* out, float* scale, const float* x, int64_t D) {
  float amax = 0.0f;
  bool finite = true;
  for (int64_t i = 0; i < D; i++) {
    const float a = std::fabs(x[i]);
    if (!(a <= std::numeric_limits<float>::max())) finite = false;
    amax = a > amax ? a : amax;
  }
  if (!finite) {
    *scale = std::numeric_limits<float>::quiet_NaN();
    for (int64_t i = 0; i < D; i++) out[i] = kE4M3NaN;
    return;
  }
  const float s = ue8m0_scale(amax > kAmaxFloor ? amax : kAmaxFloor);
  const float inv = 1.0f / s;  // exact: a power of two in [2^-120, 2^22]
  *scale = s;
  for (int64_t i = 0; i < D; i++) out[i] = f32_to_e4m3(x[i] * inv);
}

#if GLANCE_X86
// 8 fp32 (already times 1/scale) -> 8 e4m3 codes in the low byte of each int32 lane (same steps as f32_to_e4m3).
GLANCE_AVX2 inline __m256i e4m3_codes8(__m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(bits, 24), _mm256_set1_epi32(0x80));
  const __m256i u = _mm256_min_epu32(_mm256_and_si256(bits, _mm256_set1_epi32(0x7FFFFFFF)),
                                     _mm256_set1_epi32(static_cast<int>(kE4M3MaxBits)));
  const __m256i E = _mm256_srli_epi32(u, 23);
  const __m256i one = _mm256_set1_epi32(1);
  // normal
  const __m256i rnd = _mm256_add_epi32(_mm256_set1_epi32(0x7FFFF), _mm256_and_si256(_mm256_srli_epi32(u, 20), one));
  const __m256i normal = _mm256_sub_epi32(_mm256_srli_epi32(_mm256_add_epi32(u, rnd), 20), _mm256_set1_epi32(120 << 3));
  // subnormal: shift counts >= 32 give 0 in vpsllvd / vpsrlvd, which is the right answer there
  const __m256i sh = _mm256_sub_epi32(_mm256_set1_epi32(141), E);
  const __m256i mant = _mm256_or_si256(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFF)), _mm256_set1_epi32(0x800000));
  const __m256i half = _mm256_sub_epi32(_mm256_sllv_epi32(one, _mm256_sub_epi32(sh, one)), one);
  const __m256i odd = _mm256_and_si256(_mm256_srlv_epi32(mant, sh), one);
  const __m256i sub = _mm256_srlv_epi32(_mm256_add_epi32(_mm256_add_epi32(mant, half), odd), sh);
  const __m256i is_normal = _mm256_cmpgt_epi32(E, _mm256_set1_epi32(120));
  return _mm256_or_si256(_mm256_blendv_epi8(sub, normal, is_normal), sign);
}

GLANCE_AVX2 void quantize_row_avx2(uint8_t* out, float* scale, const float* x, int64_t D) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 fmax = _mm256_set1_ps(std::numeric_limits<float>::max());
  __m256 vmax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= D; i += 8) {
    const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask);
    vmax = _mm256_max_ps(vmax, a);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, fmax, _CMP_NLE_UQ));  // NaN or infinity
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float amax = 0.0f;
  for (int j = 0; j < 8; j++) amax = lanes[j] > amax ? lanes[j] : amax;
  bool finite = _mm256_movemask_ps(bad) == 0;
  for (int64_t j = i; j < D; j++) {
    const float a = std::fabs(x[j]);
    if (!(a <= std::numeric_limits<float>::max())) finite = false;
    amax = a > amax ? a : amax;
  }
  if (!finite) {
    *scale = std::numeric_limits<float>::quiet_NaN();
    for (int64_t j = 0; j < D; j++) out[j] = kE4M3NaN;
    return;
  }
  const float s = ue8m0_scale(amax > kAmaxFloor ? amax : kAmaxFloor);
  const float inv = 1.0f / s;
  *scale = s;
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  i = 0;
  for (; i + 32 <= D; i += 32) {
    const __m256i c0 = e4m3_codes8(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
    const __m256i c1 = e4m3_codes8(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vinv));
    const __m256i c2 = e4m3_codes8(_mm256_mul_ps(_mm256_loadu_ps(x + i + 16), vinv));
    const __m256i c3 = e4m3_codes8(_mm256_mul_ps(_mm256_loadu_ps(x + i + 24), vinv));
    // packs work within 128-bit lanes: bytes come out as dwords 0-3, 8-11, 16-19, 24-27 | 4-7, 12-15, 20-23, 28-31
    const __m256i w01 = _mm256_packus_epi32(c0, c1), w23 = _mm256_packus_epi32(c2, c3);
    const __m256i b = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w01, w23), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), b);
  }
  for (; i < D; i++) out[i] = f32_to_e4m3(x[i] * inv);
}
#endif

// The int8 exponent of an FP8 latent tile whose finite magnitudes peak at amax: the least e with amax <= 448 * 2^e,
// exactly (amax = m 2^p, m in [0.5, 1), 448 = 0.875 2^9), clamped to the range whose decoded values stay normal.
int64_t latent_tile_exponent(float amax) {
  if (amax == 0.0f) return 0;
  int p = 0;
  const float m = std::frexp(amax, &p);
  return clamp_latent_fp8_exponent(p - 9 + (m > 0.875f ? 1 : 0));
}

// fp32 -> bf16 bits, nearest even; NaN stays a quiet NaN (the engine's storeBf16).
inline uint16_t round_bf16(float v) {
  const uint32_t u = f32_to_bits(v);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

void quantize_latent_row(uint8_t* row, const float* x, int64_t L, int64_t R) {
  const int64_t tile = latent_fp8_tile(L);
  uint8_t* exps = row + L + 2 * R;
  for (int64_t c0 = 0; c0 < L; c0 += tile) {
    float amax = 0.0f;
    for (int64_t c = c0; c < c0 + tile; c++) {
      const float a = std::fabs(x[c]);
      if (a <= std::numeric_limits<float>::max() && a > amax) amax = a;  // NaN and infinities left out
    }
    const int64_t e = latent_tile_exponent(amax);
    // 2^-e is a normal fp32 for e in [-117, 119]; x * 2^-e is exact except where it is below 2^-126, far under e4m3's
    // rounding threshold (2^-10): those still give code 0.
    const float inv = bits_to_f32(static_cast<uint32_t>(127 - e) << 23);
    for (int64_t c = c0; c < c0 + tile; c++) {
      const float v = x[c];
      row[c] = v != v ? static_cast<uint8_t>(kE4M3NaN | ((f32_to_bits(v) >> 24) & 0x80u)) : f32_to_e4m3(v * inv);
    }
    exps[c0 / tile] = static_cast<uint8_t>(static_cast<int8_t>(e));
  }
  for (int64_t r = 0; r < R; r++) {
    const uint16_t b = round_bf16(x[L + r]);
    std::memcpy(row + L + 2 * r, &b, 2);
  }
  const int64_t used = L + 2 * R + L / tile;
  if (latent_fp8_row_bytes(L, R) > used) row[used] = 0;
}

}  // namespace

void quantize_latent_fp8(uint8_t* dst, int64_t rowOffset, const float* src, int64_t rows, int64_t kvLora, int64_t rope) {
  if (rows <= 0) return;
  const int64_t rb = latent_fp8_row_bytes(kvLora, rope), D = kvLora + rope;
  parallel_for(
      rows,
      [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; r++) quantize_latent_row(dst + (rowOffset + r) * rb, src + r * D, kvLora, rope);
      },
      threads_for(rows * (D > 0 ? D : 1), 1 << 15));
}

// out [N, D] e4m3fn bytes, scales [N] (powers of two), from x [N, D]; one ue8m0 block per row. Rows across threads.
void quantize_fp8_rows(uint8_t* out, float* scales, const float* x, int64_t N, int64_t D) {
  if (N <= 0) return;
  const bool avx2 = use_avx2();
  parallel_for(
      N,
      [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; r++) {
#if GLANCE_X86
          if (avx2) {
            quantize_row_avx2(out + r * D, scales + r, x + r * D, D);
            continue;
          }
#endif
          quantize_row_scalar(out + r * D, scales + r, x + r * D, D);
        }
      },
      threads_for(N * (D > 0 ? D : 1), 1 << 15));
}

}  // namespace glance
