// The indexer's query/key preparation on the GPU: Walsh-Hadamard rotation and DeepSeek act_quant (ue8m0) to e4m3.
// Same contracts as kernels/cpu/hadamard.cc and quantize.cc (sidecar/src/native/contract.ts: hadamardRows,
// quantizeFp8Rows); both give bit-identical results to the CPU ops (the same fp32 operations in the same order, and
// the same integer rounding to e4m3).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace glance {
namespace cuda {

// In place on x [N, D] (device), D a power of two, 1 <= D <= 8192: every row becomes H_D x / sqrt(D) (Sylvester
// order): log2(D) butterfly passes h = 1, 2, ..., D/2, then a multiply by fp32(1 / sqrt(D)).
void hadamard_rows(float* x, int64_t N, int64_t D, cudaStream_t stream);

// out [N, D] e4m3fn bytes, scales [N] fp32 from x [N, D] fp32 (device; D <= 65536). Per row:
// amax = max(max |x|, fp32(1e-4)); scale = 2^ceil(log2(fp32(amax / 448))); out = e4m3fn(x * (1 / scale)), round to
// nearest even, saturated to +-448, sign kept. A row with a NaN or an infinity: scale NaN, every byte 0x7F.
void quantize_fp8_rows(uint8_t* out, float* scales, const float* x, int64_t N, int64_t D, cudaStream_t stream);

}  // namespace cuda
}  // namespace glance
