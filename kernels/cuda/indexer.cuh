// Lightning-indexer scores over the FP8 key cache on the GPU (DeepGEMM fp8_mqa_logits contract; the CPU op is
// kernels/cpu/indexer_fp8.cc, contract.ts indexerScoresFp8):
//
//   out[t, s] = key_scales[s] * sum_h weights[t, h] * max(0, sum_d e4m3(q[t,h,d]) * e4m3(keys[s,d]))
//       for s <= positions[t] (and s < S);  -inf for s > positions[t]  (a negative position: an all -inf row).
//
// q [T, Hi, D] e4m3 (the Hadamard-rotated, act_quant-ed query); weights [T, Hi] fp32 with every query-side scale
// folded in; keys [S, D] e4m3 rows and key_scales [S] fp32 (the 132-byte-per-token cache at D = 128, as two arrays);
// positions [T] int32; out [T, ld_out] fp32 (ld_out >= S; columns >= S are not written). All device pointers.
// fp32 accumulation; a product of two e4m3 values is exact in fp32, so results differ from the CPU op only by the
// order of the sums. q and keys must not hold the e4m3 NaN codes (0x7F / 0xFF).
//
// Decode (T = 1 or 2 queries) and prefill use the same kernel: a block holds a chunk of up to 4 queries in shared
// memory and streams key tiles of 256 rows straight from the cache into tensor-core fragments (FP8 mma on sm_89+,
// f16 mma on sm_80); key tiles past every position of the chunk only write -inf. Prefill callers chunk the queries
// themselves (indexer_topk_prefill) so that the [T, S] logits are never materialised whole.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace glance {
namespace cuda {

void indexer_scores_fp8(float* out, int64_t ld_out, const uint8_t* q, const float* weights, const uint8_t* keys,
                        const float* key_scales, int64_t T, int64_t S, int64_t Hi, int64_t D,
                        const int32_t* positions, cudaStream_t stream);

// Indexer scores then exact top-k per query (topk.cuh), chunked over queries so that the logits of at most
// chunk_rows queries exist at a time: idx [T, k] int32 (ascending positions, -1 padded), the decode step's and the
// prefill's token selection. positions_host (optional, the same values as the device array) lets each chunk score
// and select over keys [0, max position of the chunk] only, since later keys are -inf for all of its queries.
// chunk_rows <= 0 picks a chunk of about 1 GiB of logits. Workspace: indexer_topk_workspace_bytes(...) bytes.
size_t indexer_topk_workspace_bytes(int64_t T, int64_t S, int64_t chunk_rows);
void indexer_topk(int32_t* idx, const uint8_t* q, const float* weights, const uint8_t* keys, const float* key_scales,
                  int64_t T, int64_t S, int64_t Hi, int64_t D, const int32_t* positions,
                  const int32_t* positions_host, int64_t k, int64_t chunk_rows, void* workspace,
                  size_t workspace_bytes, cudaStream_t stream);
int64_t indexer_topk_default_chunk_rows(int64_t T, int64_t S);

// Whether (Hi, D) takes the tensor-core path (Hi a multiple of 8 up to 128; D 64 or 128; keys/q 16-byte aligned);
// other shapes run a plain fp32 kernel with the same results up to summation order.
bool indexer_fast_path(int64_t Hi, int64_t D);

}  // namespace cuda
}  // namespace glance
