// Device-side weight element loads: fp32 / bf16 / fp16 / DeepSeek FP8 (e4m3 · weight_scale_inv per 128×128
// block), dequantised in registers. Shared by gemm.cu and model_ops.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "common.cuh"
#include "model_ops.cuh"

namespace glance {
namespace cuda {

__device__ __forceinline__ float bf16_bits_to_float(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }

__device__ __forceinline__ float fp8_block_scale(const DevWeight& w, int r, int c) {
  return w.scale_inv[(r >> 7) * w.scale_cols + (c >> 7)];
}

// One element W[r, c] in fp32.
__device__ __forceinline__ float wload(const DevWeight& w, int r, int c) {
  const size_t i = static_cast<size_t>(r) * static_cast<size_t>(w.cols) + static_cast<size_t>(c);
  switch (w.dtype) {
    case kF32: return reinterpret_cast<const float*>(w.data)[i];
    case kBF16: return bf16_bits_to_float(reinterpret_cast<const uint16_t*>(w.data)[i]);
    case kF16: return __half2float(reinterpret_cast<const __half*>(w.data)[i]);
    default: return e4m3_to_float(w.data[i]) * fp8_block_scale(w, r, c);
  }
}

// 8 consecutive elements W[r, c..c+8) in fp32; requires c + 8 ≤ cols, cols % 8 == 0 (16-byte / 8-byte aligned rows).
template <int DT>
__device__ __forceinline__ void wload8(const DevWeight& w, int r, int c, float v[8]) {
  const size_t i = static_cast<size_t>(r) * static_cast<size_t>(w.cols) + static_cast<size_t>(c);
  if constexpr (DT == kF32) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(reinterpret_cast<const float*>(w.data) + i));
    const float4 b = __ldg(reinterpret_cast<const float4*>(reinterpret_cast<const float*>(w.data) + i + 4));
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
  } else if constexpr (DT == kBF16) {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(reinterpret_cast<const uint16_t*>(w.data) + i));
    const uint32_t p[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
      v[2 * j] = __uint_as_float(p[j] << 16);
      v[2 * j + 1] = __uint_as_float(p[j] & 0xFFFF0000u);
    }
  } else if constexpr (DT == kF16) {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(reinterpret_cast<const __half*>(w.data) + i));
    const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const float2 f = __half22float2(h[j]);
      v[2 * j] = f.x;
      v[2 * j + 1] = f.y;
    }
  } else {
    const uint2 u = __ldg(reinterpret_cast<const uint2*>(w.data + i));
    const uint32_t p[2] = {u.x, u.y};
    const float sc = fp8_block_scale(w, r, c);
#pragma unroll
    for (int j = 0; j < 2; j++) {
#pragma unroll
      for (int b = 0; b < 2; b++) {
        const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>((p[j] >> (16 * b)) & 0xFFFFu), __NV_E4M3);
        const float2 f = __half22float2(__half2(h));
        v[4 * j + 2 * b] = f.x * sc;
        v[4 * j + 2 * b + 1] = f.y * sc;
      }
    }
  }
}

}  // namespace cuda
}  // namespace glance
