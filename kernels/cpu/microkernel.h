// The register-tiled fp32 FMA micro-kernel shared by the GEMM (matmul.cc), the MLA query absorption (mla.cc)
// and the lightning indexer (indexer.cc).
#pragma once

#include <cstdint>

namespace glance {

// Micro-kernel tile: up to kMR rows of A times kNR columns of B.
constexpr int kMR = 6;
constexpr int kNR = 16;

// C[i*ldc + j] = (accumulate ? C[i*ldc + j] : 0) + sum_{k<K} A[i*lda + k] * B[k*ldb + j]
// for i < mr (1..kMR) and j < nvalid (1..kNR). B must have kNR readable columns per k row (pad with zeros);
// only the first nvalid columns of C are written. K may be 0 (writes zeros / leaves C as is).
// AVX2+FMA only (6x16 tile held in 12 ymm accumulators); callers check use_avx2().
void ukernel_avx2(int mr, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                  int64_t ldc, int nvalid, bool accumulate);

}  // namespace glance
