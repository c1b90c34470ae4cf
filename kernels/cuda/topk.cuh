// Exact top-k per row on the GPU. Same contract as kernels/cpu/topk.cc (contract.ts topk):
//   idx[t, :] = the column indices of the k largest finite scores[t, :], in ascending column order; ties at the
//   threshold keep the lower columns; non-finite scores (-inf, +inf, NaN) are never selected; -0 == +0; rows with
//   fewer than k finite scores are padded with -1 after their finite columns.
// scores [T, ld_scores] fp32 (first S columns read), idx [T, k] int32, device pointers. The output is identical to
// the CPU op's, element for element.
//
// Radix select on the order-preserving 32-bit key of each score, 11 + 11 + 10 bits, split across blocks: a row is
// cut into chunks of 4096 columns and every pass runs one block per (chunk, row), so a 128K row keeps 32 blocks
// busy (batch-1 decode latency). Passes: three histograms (each restricted to the previous levels' bucket), a count
// of the keys above / equal to the threshold per chunk, and an ordered emit in which each chunk writes its selected
// columns at the offset the earlier chunks leave it. Exact for any number of ties (no candidate buffers to overflow).
//
// Workspace: topk_workspace_bytes(T, S) bytes of device memory, zero on entry and left zero on return (the caller
// zeroes it once after allocating it; the single-kernel path clears its rows itself, the multi-kernel path with a
// cudaMemsetAsync after its last pass), so that a decode step runs top-k as one kernel, graph-capturable and
// allocation-free.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace glance {
namespace cuda {

size_t topk_workspace_bytes(int64_t T, int64_t S);

void topk(int32_t* idx, const float* scores, int64_t ld_scores, int64_t T, int64_t S, int64_t k, void* workspace,
          size_t workspace_bytes, cudaStream_t stream);

// For producers that fuse the level-1 histogram into their own epilogue (the indexer in indexer_topk):
// topk_prepare_fused_hist1 zeroes the workspace (whatever it holds: the producer's own scratch may share it); the producer then adds, for every finite score of row t, one to
// word (key >> 21) of row t's histogram at workspace + t * topk_hist1_row_stride(S) words (uint32), key being
// topk_score_key (common.cuh); topk_after_fused_hist1 runs the remaining passes.
int64_t topk_hist1_row_stride(int64_t S);
void topk_prepare_fused_hist1(void* workspace, size_t workspace_bytes, int64_t T, int64_t S, cudaStream_t stream);
void topk_after_fused_hist1(int32_t* idx, const float* scores, int64_t ld_scores, int64_t T, int64_t S, int64_t k,
                            void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace cuda
}  // namespace glance
