// AVX2/F16C building blocks: load 8 weights of a storage type as 8 fp32 lanes. Only callable from functions
// marked GLANCE_AVX2 (they inline into them).
#pragma once

#include "dtype.h"
#include "simd.h"

#if GLANCE_X86
namespace glance {

// 8 fp32 (unaligned).
GLANCE_AVX2 inline __m256 load8_f32(const uint8_t* p) { return _mm256_loadu_ps(reinterpret_cast<const float*>(p)); }

// 8 bf16 -> fp32: zero-extend to 32 bits and shift into the high half.
GLANCE_AVX2 inline __m256 load8_bf16(const uint8_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// 8 f16 -> fp32 with F16C.
GLANCE_AVX2 inline __m256 load8_f16(const uint8_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// The e4m3 bit pattern s.eeee.mmm, moved into an f16 as s.0eeee.mmm0000000, is the same number times 2^-8
// (f16 exponent bias 15 vs e4m3 bias 7), subnormals included; F16C then widens it exactly. The 2^8 is folded
// into the block scale by the caller (multiply by kE4M3F16Fix). The NaN codes (S.1111.111) get an all-ones f16
// exponent so that they stay NaN.
constexpr float kE4M3F16Fix = 256.0f;

GLANCE_AVX2 inline __m256 load8_e4m3_f16(const uint8_t* p) {
  const __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  // (b << 8) >>arith 1 puts the sign in bits 15 and 14, exponent in 13..10, mantissa in 9..7; clear bit 14.
  __m128i h = _mm_and_si128(_mm_srai_epi16(_mm_slli_epi16(b, 8), 1), _mm_set1_epi16(static_cast<short>(0xBFFF)));
  const __m128i nan = _mm_cmpeq_epi16(_mm_and_si128(b, _mm_set1_epi16(0x7f)), _mm_set1_epi16(0x7f));
  h = _mm_or_si128(h, _mm_and_si128(nan, _mm_set1_epi16(0x7C00)));
  return _mm256_cvtph_ps(h);
}

// 16 e4m3 -> two times 8 fp32 (times 2^-8, like load8_e4m3_f16), with 256-bit integer ops.
GLANCE_AVX2 inline void load16_e4m3_f16(const uint8_t* p, __m256& lo, __m256& hi) {
  const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  __m256i h = _mm256_and_si256(_mm256_srai_epi16(_mm256_slli_epi16(b, 8), 1), _mm256_set1_epi16(static_cast<short>(0xBFFF)));
  const __m256i nan = _mm256_cmpeq_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x7f)), _mm256_set1_epi16(0x7f));
  h = _mm256_or_si256(h, _mm256_and_si256(nan, _mm256_set1_epi16(0x7C00)));
  lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
  hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

// 32 e4m3 bytes (already loaded) -> four times 8 fp32, each the value times 2^-8 like load8_e4m3_f16, without
// the NaN fix-up (a NaN code decodes to a finite number: the caller checks, see e4m3_nan_track, or the data
// is known to hold none). v0 = bytes 0..7, v1 = 8..15, v2 = 16..23, v3 = 24..31.
// The byte -> 16-bit widening is an in-lane unpack against zero (b << 8), so that only the four F16C
// conversions and two extracts need the lane-crossing port: (b << 8) >>arith 1 puts the sign in bits 15 and 14,
// exponent in 13..10, mantissa in 9..7; clearing bit 14 leaves the f16 s.0eeee.mmm0000000.
GLANCE_AVX2 inline void decode32_e4m3_f16_nonan(__m256i b, __m256& v0, __m256& v1, __m256& v2, __m256& v3) {
  const __m256i z = _mm256_setzero_si256();
  const __m256i m = _mm256_set1_epi16(static_cast<short>(0xBFFF));
  const __m256i lo = _mm256_and_si256(_mm256_srai_epi16(_mm256_unpacklo_epi8(z, b), 1), m);  // bytes 0-7 | 16-23
  const __m256i hi = _mm256_and_si256(_mm256_srai_epi16(_mm256_unpackhi_epi8(z, b), 1), m);  // bytes 8-15 | 24-31
  v0 = _mm256_cvtph_ps(_mm256_castsi256_si128(lo));
  v1 = _mm256_cvtph_ps(_mm256_castsi256_si128(hi));
  v2 = _mm256_cvtph_ps(_mm256_extracti128_si256(lo, 1));
  v3 = _mm256_cvtph_ps(_mm256_extracti128_si256(hi, 1));
}

// NaN tracking for decode32_e4m3_f16_nonan: acc = e4m3_nan_track(acc, b) over the bytes decoded (start from
// zero), then e4m3_nan_seen(acc). b + b drops the sign and turns exactly the two NaN codes into 0xFE, the
// largest even byte, so an unsigned running max reaches 0xFE iff a NaN code was seen (two cheap ops per 32 bytes).
GLANCE_AVX2 inline __m256i e4m3_nan_track(__m256i acc, __m256i b) { return _mm256_max_epu8(acc, _mm256_add_epi8(b, b)); }

GLANCE_AVX2 inline bool e4m3_nan_seen(__m256i acc) {
  const __m256i hit = _mm256_cmpeq_epi8(acc, _mm256_set1_epi8(static_cast<char>(0xFE)));
  return !_mm256_testz_si256(hit, hit);
}

}  // namespace glance
#endif
