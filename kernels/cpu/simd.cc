#include "simd.h"

#include "amx_tiles.h"

#include <cstdlib>
#include <cstring>

#if GLANCE_AMX_BUILD
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace glance {

static SimdLevel detect() {
  const char* env = std::getenv("GLANCE_SIMD");
  if (env != nullptr && std::strcmp(env, "scalar") == 0) return SimdLevel::Scalar;
#if GLANCE_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
    return SimdLevel::Avx2;
  }
#endif
  return SimdLevel::Scalar;
}

SimdLevel simd_level() {
  static const SimdLevel level = detect();
  return level;
}

bool use_avx512_bf16() {
  static const bool on = [] {
    if (!use_avx2()) return false;
    const char* env = std::getenv("GLANCE_SIMD");
    if (env != nullptr && std::strcmp(env, "avx2") == 0) return false;
#if GLANCE_X86
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
  }();
  return on;
}

bool use_amx_bf16() {
  static const bool on = [] {
    if (!use_avx512_bf16()) return false;
    const char* env = std::getenv("GLANCE_SIMD");
    if (env != nullptr && std::strcmp(env, "avx512") == 0) return false;
#if GLANCE_AMX_BUILD
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool vbmi = (c >> 1) & 1, amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1;
    if (!vbmi || !amx_bf16 || !amx_tile) return false;
    // Linux hands out the 8 KB tile state only on request; without it a tile instruction faults.
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }();
  return on;
}

#if GLANCE_AMX_BUILD
GLANCE_AMX void load_tile_config(const TileConfig& cfg, uint32_t id) {
  static thread_local uint32_t loaded = 0;
  if (loaded == id) return;
  _tile_loadconfig(&cfg);
  loaded = id;
}
#else
void load_tile_config(const TileConfig&, uint32_t) {}
#endif

const char* simd_name() { return simd_level() == SimdLevel::Avx2 ? "avx2+fma+f16c" : "scalar"; }

}  // namespace glance
