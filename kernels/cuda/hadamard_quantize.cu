// Hadamard rotation and ue8m0 FP8 quantisation of rows (contracts in hadamard_quantize.cuh). One block per row; the
// row lives in shared memory. These are small (the indexer's q and k of one step), so they are written for
// exactness and simplicity, not peak bandwidth.
#include <cmath>

#include "common.cuh"
#include "hadamard_quantize.cuh"

namespace glance {
namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxHadamardD = 8192;

__global__ void hadamard_rows_kernel(float* x, int D, float scale) {
  pdl_wait();
  pdl_launch_dependents();
  extern __shared__ float row[];
  float* xr = x + static_cast<int64_t>(blockIdx.x) * D;
  for (int i = threadIdx.x; i < D; i += blockDim.x) row[i] = xr[i];
  __syncthreads();
  for (int h = 1; h < D; h <<= 1) {
    // D/2 butterflies per pass: pair p -> (i, i + h) with i = (p / h) * 2h + p % h; a' = a + b, b' = a - b.
    for (int p = threadIdx.x; p < D / 2; p += blockDim.x) {
      const int i = (p / h) * 2 * h + (p % h);
      const float a = row[i], b = row[i + h];
      row[i] = a + b;
      row[i + h] = a - b;
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < D; i += blockDim.x) xr[i] = __fmul_rn(row[i], scale);
}

__global__ void quantize_fp8_rows_kernel(uint8_t* out, float* scales, const float* x, int64_t D) {
  pdl_wait();
  pdl_launch_dependents();
  const int64_t n = blockIdx.x;
  const float* xr = x + n * D;
  uint8_t* orow = out + n * D;
  float amax = 0.0f;
  int bad = 0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const float a = fabsf(xr[i]);
    if (!(a <= 3.402823466e38f)) bad = 1;  // NaN or infinity
    amax = fmaxf(amax, a);
  }
  __shared__ float s_max[kThreads / 32];
  __shared__ int s_bad[kThreads / 32];
  amax = warp_max(amax);
  bad = __any_sync(0xffffffffu, bad);
  if ((threadIdx.x & 31) == 0) {
    s_max[threadIdx.x >> 5] = amax;
    s_bad[threadIdx.x >> 5] = bad;
  }
  __syncthreads();
  amax = 0.0f;
  bad = 0;
  for (int w = 0; w < kThreads / 32; w++) {
    amax = fmaxf(amax, s_max[w]);
    bad |= s_bad[w];
  }
  if (bad) {
    if (threadIdx.x == 0) scales[n] = __int_as_float(0x7FC00000);
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) orow[i] = 0x7F;
    return;
  }
  const float s = e4m3_pow2_scale(amax);
  const float inv = 1.0f / s;
  if (threadIdx.x == 0) scales[n] = s;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) orow[i] = float_to_e4m3(__fmul_rn(xr[i], inv));
}

}  // namespace

void hadamard_rows(float* x, int64_t N, int64_t D, cudaStream_t stream) {
  if (D < 1 || (D & (D - 1)) != 0 || D > kMaxHadamardD)
    invalid_argument("hadamard_rows", "D must be a power of two in [1, 8192], got " + std::to_string(D));
  if (N <= 0) return;
  if (N > INT32_MAX) invalid_argument("hadamard_rows", "N is too large");
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  launch_kernel("hadamard_rows_kernel", hadamard_rows_kernel, dim3(static_cast<unsigned>(N)), dim3(kThreads), D * sizeof(float), stream, x, static_cast<int>(D), scale);
  GLANCE_CUDA_CHECK_LAUNCH("hadamard_rows_kernel");
}

void quantize_fp8_rows(uint8_t* out, float* scales, const float* x, int64_t N, int64_t D, cudaStream_t stream) {
  if (D < 0 || D > 65536) invalid_argument("quantize_fp8_rows", "D must be in [0, 65536], got " + std::to_string(D));
  if (N <= 0) return;
  if (N > INT32_MAX) invalid_argument("quantize_fp8_rows", "N is too large");
  launch_kernel("quantize_fp8_rows_kernel", quantize_fp8_rows_kernel, dim3(static_cast<unsigned>(N)), dim3(kThreads), 0, stream, out, scales, x, D);
  GLANCE_CUDA_CHECK_LAUNCH("quantize_fp8_rows_kernel");
}

}  // namespace cuda
}  // namespace glance
