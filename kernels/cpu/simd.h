// Run-time SIMD selection for the CPU kernels.
//
// The addon is compiled for generic x86-64 (no -mavx2 anywhere on the command line) so that it loads on any
// x86-64 CPU. Hot kernels have a second body marked GLANCE_AVX2 (GCC/Clang per-function target attribute)
// that is only called when the CPU reports AVX2 + FMA + F16C at run time. Every such kernel also keeps a
// portable scalar body, which is what non-x86 builds compile.
//
// GLANCE_SIMD=scalar in the environment (read once, when the addon loads) forces the scalar bodies; the tests
// use it to check the fallback against the same references. A few kernels have a third body for AVX-512 with the
// BF16 dot-product instructions (GLANCE_AVX512BF16, use_avx512_bf16()), and the FP8 indexer and the bf16-cache
// attention one for AMX (GLANCE_AMX, use_amx_bf16()). GLANCE_SIMD=avx2 stops at the AVX2 bodies, GLANCE_SIMD=avx512
// at the AVX-512-BF16 ones (how the tests reach every body on one CPU).
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#define GLANCE_X86 1
#include <immintrin.h>
#define GLANCE_AVX2 __attribute__((target("avx2,fma,f16c")))
#define GLANCE_AVX512BF16 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define GLANCE_X86 0
#define GLANCE_AVX2
#define GLANCE_AVX512BF16
#endif
// AMX (tile registers, bf16 tile products) + AVX-512 VBMI: Linux on x86-64 only (the tile state is granted per
// process by arch_prctl).
#if GLANCE_X86 && defined(__linux__)
#define GLANCE_AMX_BUILD 1
#define GLANCE_AMX __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi,amx-tile,amx-bf16")))
#else
#define GLANCE_AMX_BUILD 0
#define GLANCE_AMX
#endif

namespace glance {

enum class SimdLevel { Scalar = 0, Avx2 = 1 };

// The level every kernel dispatches on. Fixed for the life of the process.
SimdLevel simd_level();

// "avx2+fma+f16c" or "scalar".
const char* simd_name();

inline bool use_avx2() { return GLANCE_X86 && simd_level() == SimdLevel::Avx2; }

// AVX2 level and the CPU has AVX-512 F/BW/VL + BF16 (vdpbf16ps), unless GLANCE_SIMD=avx2. Only kernels whose
// contract allows bf16-rounded operands use it (the attention over a bf16 latent cache).
bool use_avx512_bf16();

// use_avx512_bf16() and the CPU has AMX-TILE + AMX-BF16 + AVX-512 VBMI and the OS granted this process the tile
// state (asked once), unless GLANCE_SIMD=avx512. Used by the FP8 indexer (indexer_fp8_amx.cc) and the attention over
// a bf16 cache (mla.cc).
bool use_amx_bf16();

// Software prefetch far ahead of a memory stream (weight rows in the GEMVs, indexer keys, gathered latent rows): one
// place for the cache-level hint, T0 (into L1). Measured on the development VM's 32K decode step (session 5, A/B per
// stream in alternating child processes): T1 for the weight rows 6.60 vs 6.77 ms (within the noise), T1 / T2 for
// keys and rows no better, NTA for the keys worse (8.0-8.6 vs 6.7-7.5 ms).
#if GLANCE_X86
inline void prefetch_far(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }
#else
inline void prefetch_far(const void* p) { __builtin_prefetch(p, 0, 3); }
#endif

#if GLANCE_X86
// Horizontal sum of the 8 lanes.
GLANCE_AVX2 inline float hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 sh = _mm_movehdup_ps(lo);
  lo = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, lo);
  lo = _mm_add_ss(lo, sh);
  return _mm_cvtss_f32(lo);
}
#endif

}  // namespace glance
