// Random fills for benchmarks (bench_support.cuh).
#include "bench_support.cuh"
#include "common.cuh"

namespace glance {
namespace cuda {

namespace {

__device__ __forceinline__ uint32_t hash64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}
__device__ __forceinline__ float unit(uint64_t seed, size_t i) {  // [0, 1)
  return (hash64(seed * 0x9E3779B97F4A7C15ULL + i) >> 8) * (1.0f / 16777216.0f);
}

template <class F>
__global__ void fill_kernel(size_t n, F f) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    f(i);
}

template <class F>
void launch_fill(size_t n, F f, cudaStream_t stream) {
  if (n == 0) return;
  const size_t blocks = std::min<size_t>((n + 255) / 256, 65536);
  fill_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(n, f);
  GLANCE_CUDA_CHECK_LAUNCH("fill_kernel");
}

}  // namespace

void fill_random_e4m3(uint8_t* p, size_t n, uint64_t seed, cudaStream_t stream) {
  launch_fill(n, [=] __device__(size_t i) {
    uint8_t b = static_cast<uint8_t>(hash64(seed * 0x9E3779B97F4A7C15ULL + i));
    if ((b & 0x7F) == 0x7F) b ^= 1;
    p[i] = b;
  }, stream);
}

void fill_random_f32(float* p, size_t n, float lo, float hi, uint64_t seed, cudaStream_t stream) {
  launch_fill(n, [=] __device__(size_t i) { p[i] = lo + (hi - lo) * unit(seed, i); }, stream);
}

void fill_random_pow2(float* p, size_t n, int emin, int emax, uint64_t seed, cudaStream_t stream) {
  launch_fill(n, [=] __device__(size_t i) {
    const int e = emin + static_cast<int>(hash64(seed * 0x9E3779B97F4A7C15ULL + i) % static_cast<uint32_t>(emax - emin + 1));
    p[i] = ldexpf(1.0f, e);
  }, stream);
}

void fill_random_bf16(uint16_t* p, size_t n, float scale, uint64_t seed, cudaStream_t stream) {
  launch_fill(n, [=] __device__(size_t i) {
    const __nv_bfloat16 v = __float2bfloat16((unit(seed, i) * 2.0f - 1.0f) * scale);
    p[i] = *reinterpret_cast<const uint16_t*>(&v);
  }, stream);
}

void fill_random_index(int32_t* p, size_t n, int32_t range, uint64_t seed, cudaStream_t stream) {
  launch_fill(n, [=] __device__(size_t i) {
    p[i] = static_cast<int32_t>(hash64(seed * 0x9E3779B97F4A7C15ULL + i) % static_cast<uint32_t>(range));
  }, stream);
}

void fill_iota(int32_t* p, size_t n, int32_t start, cudaStream_t stream) {
  launch_fill(n, [=] __device__(size_t i) { p[i] = start + static_cast<int32_t>(i); }, stream);
}

}  // namespace cuda
}  // namespace glance
