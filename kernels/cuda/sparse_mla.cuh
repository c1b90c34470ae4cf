// Sparse MLA attention in the absorbed (MQA) form over selected latent rows: DSA's main attention on the GPU.
// Same contract as the CPU op's sparse case (kernels/cpu/mla.cc, contract.ts mlaAttention with indices):
//
//   q [T, H, D] and kv [S, D] bf16 with D = kv_lora + rope (c_kv then k_pe; one KV head shared by all H heads);
//   indices [T, k] int32: for query t, s ranges over indices[t, 0..k) skipping -1 (entries >= S are skipped too);
//   p[t,h,s] = softmax_s(scale * q[t,h] . kv[s]);  out[t,h,:] = sum_s p[t,h,s] * kv[s, 0:kv_lora]   (out fp32
//   [T, H, kv_lora]); a query with no valid index gets out = 0. fp32 scores and sums, probabilities rounded to bf16
//   for the P.V product (as FlashMLA does).
//
// Tensor cores (mma.m16n8k16 bf16, fp32 accumulate) for Q.K^T and P.V; the selected rows are gathered 32 at a time
// into shared memory with cp.async, double-buffered, online softmax across tiles.
//   Decode (few queries): 32 heads per block (16 below 32 heads), and the k selected rows split over blocks (split-KV) so that the
//   whole GPU works on one token; a combine kernel merges the splits by their log-sum-exp.
//   Prefill (many queries): 64 heads per block (the gathered rows serve 4x more heads), no split.
// Supported: D % 8 == 0, kv_lora % 16 == 0, kv_lora <= 512, D <= 640; other shapes throw std::invalid_argument.
// Workspace (split-KV partials, and the split arrival counters when the last split of a head block merges the
// partials itself): sparse_mla_workspace_bytes(T, H, kv_lora, rope, k) bytes, caller-owned, zeroed once by the
// caller before its first use (every call leaves the counters at zero again); no allocation, no synchronisation:
// graph-capturable.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace glance {
namespace cuda {

size_t sparse_mla_workspace_bytes(int64_t T, int64_t H, int64_t kv_lora, int64_t rope, int64_t k);

// q, kv: bf16 bit patterns (uint16), 16-byte aligned rows. out: fp32, 16-byte aligned.
void sparse_mla_attention(float* out, const uint16_t* q, const uint16_t* kv, int64_t S, int64_t T, int64_t H,
                          int64_t kv_lora, int64_t rope, float scale, const int32_t* indices, int64_t k,
                          void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace cuda
}  // namespace glance
