// Device-side random inputs for GPU benchmarks (and anything else that needs large random tensors without a host
// round trip). Counter-based hashing: the same seed gives the same data on every GPU.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace glance {
namespace cuda {

// e4m3fn bytes, uniform over the codes, never the NaN codes 0x7F / 0xFF.
void fill_random_e4m3(uint8_t* p, size_t n, uint64_t seed, cudaStream_t stream);
// Uniform in [lo, hi).
void fill_random_f32(float* p, size_t n, float lo, float hi, uint64_t seed, cudaStream_t stream);
// 2^e with e uniform in [emin, emax].
void fill_random_pow2(float* p, size_t n, int emin, int emax, uint64_t seed, cudaStream_t stream);
// bf16 bits of uniform values in [-scale, scale).
void fill_random_bf16(uint16_t* p, size_t n, float scale, uint64_t seed, cudaStream_t stream);
// Uniform integers in [0, range).
void fill_random_index(int32_t* p, size_t n, int32_t range, uint64_t seed, cudaStream_t stream);
// p[i] = i (positions 0..n-1).
void fill_iota(int32_t* p, size_t n, int32_t start, cudaStream_t stream);

}  // namespace cuda
}  // namespace glance
