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

// The same without the NaN fix-up (the caller has checked that the 16 bytes hold no NaN code): sign-extending
// the byte puts the sign in bits 15..8, so after << 7 only bit 14 needs clearing.
GLANCE_AVX2 inline void load16_e4m3_f16_nonan(const uint8_t* p, __m256& lo, __m256& hi) {
  const __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256i h = _mm256_and_si256(_mm256_slli_epi16(b, 7), _mm256_set1_epi16(static_cast<short>(0xBFFF)));
  lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
  hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

// True if any of the 32 bytes at p is an e4m3 NaN code (S.1111.111).
GLANCE_AVX2 inline bool any_e4m3_nan32(const uint8_t* p) {
  const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i ones = _mm256_set1_epi8(static_cast<char>(0xFF));
  return !_mm256_testz_si256(_mm256_cmpeq_epi8(_mm256_or_si256(b, _mm256_set1_epi8(static_cast<char>(0x80))), ones), ones);
}

}  // namespace glance
#endif
