// Shared by every CUDA op of the addon (kernels/cuda/*.cu) and by the N-API glue that calls them.
//
// Error handling: every CUDA runtime call and every launch goes through GLANCE_CUDA_CHECK / GLANCE_CUDA_CHECK_LAUNCH,
// which throw glance::cuda::CudaError ("indexer_scores_fp8: cudaLaunchKernel failed: invalid argument
// (cudaErrorInvalidValue, kernels/cuda/indexer.cu:123)"). The N-API layer turns it into a JS Error. Kernels never
// print or abort.
//
// The op headers (*.cuh beside this one) are plain C++ over device pointers and a cudaStream_t, includable from
// g++-compiled files; the device helpers below are compiled only under nvcc (__CUDACC__).
//
// Conventions of the op API (the same contracts as kernels/cpu/kernels.h, on device pointers):
//   - every op takes a cudaStream_t and enqueues work on it; it neither synchronises nor allocates, so a
//     sequence of ops can be captured into a CUDA graph. Ops that need scratch memory take a caller-owned
//     workspace whose size a *_workspace_bytes() function gives;
//   - argument checks that need no device access (shapes, supported sizes) throw std::invalid_argument with a
//     message naming the op and the argument;
//   - no op reads outside the rows its shape arguments give.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace glance {
namespace cuda {

class CudaError : public std::runtime_error {
 public:
  CudaError(cudaError_t code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
  cudaError_t code() const { return code_; }

 private:
  cudaError_t code_;
};

[[noreturn]] inline void throw_cuda_error(cudaError_t e, const char* what, const char* file, int line) {
  const char* path = file;
  // Keep the path from "kernels/" on: messages should not carry the build machine's directories.
  for (const char* p = file; *p; p++)
    if (p[0] == 'k' && std::string(p).rfind("kernels/", 0) == 0) {
      path = p;
      break;
    }
  throw CudaError(e, std::string(what) + " failed: " + cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ", " +
                         path + ":" + std::to_string(line) + ")");
}

#define GLANCE_CUDA_CHECK(expr)                                                          \
  do {                                                                                   \
    const cudaError_t glance_cuda_err_ = (expr);                                         \
    if (glance_cuda_err_ != cudaSuccess)                                                 \
      ::glance::cuda::throw_cuda_error(glance_cuda_err_, #expr, __FILE__, __LINE__);     \
  } while (0)

// After a <<<...>>> launch: launch-configuration errors (too much shared memory, no kernel image for this GPU).
#define GLANCE_CUDA_CHECK_LAUNCH(kernel_name)                                             \
  do {                                                                                   \
    const cudaError_t glance_cuda_err_ = cudaGetLastError();                             \
    if (glance_cuda_err_ != cudaSuccess)                                                 \
      ::glance::cuda::throw_cuda_error(glance_cuda_err_, "launch of " kernel_name, __FILE__, __LINE__); \
  } while (0)

[[noreturn]] inline void invalid_argument(const std::string& op, const std::string& msg) {
  throw std::invalid_argument(op + ": " + msg);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// What the addon can see of CUDA on this machine (cudaInfo() in JS). available = at least one device that this
// build can run on; reason says why not otherwise (no driver: rc 35 cudaErrorInsufficientDriver; driver but no
// GPU: 100 cudaErrorNoDevice).
struct DeviceInfo {
  bool available = false;
  int count = 0;
  int device = -1;  // the current device
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  int64_t total_memory = 0;
  int64_t l2_bytes = 0;
  int runtime_version = 0, driver_version = 0;
  std::string reason;
};
DeviceInfo device_info();  // device.cu; never throws

// Bytes of dynamic shared memory one block may use on the current device (opt-in maximum).
int max_shared_memory_per_block();

// Programmatic dependent launch (PDL, sm_90+): kernels launched through launch_kernel() below may start while the
// kernel before them in the stream is still running, so that the launch latency of a chain of small kernels (a decode
// step: ~15 kernels per layer) overlaps the previous kernel's work instead of following it. Contract of every kernel
// launched that way: it calls pdl_wait() before its first access to memory that earlier work in the stream writes or
// reads (weights and other constants may be read before), and calls pdl_launch_dependents() once it no longer minds
// the next kernel's blocks taking SM slots. On for compute capability ≥ 9.0 unless GLANCE_PDL=0 (device.cu).
bool pdl_enabled();

}  // namespace cuda
}  // namespace glance

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <utility>

namespace glance {
namespace cuda {

// e4m3fn byte -> fp32, exact for every code; 0x7F / 0xFF give NaN.
__device__ __forceinline__ float e4m3_to_float(uint8_t b) {
  const uint32_t sign = static_cast<uint32_t>(b & 0x80) << 24;
  const uint32_t e = (b >> 3) & 0xF, m = b & 7;
  if (e == 0xF && m == 7) return __int_as_float(0x7FC00000 | sign);
  float v;
  if (e == 0) v = static_cast<float>(m) * 0.001953125f;  // subnormal: m * 2^-9
  else v = __uint_as_float(((e + 120u) << 23) | (m << 20));
  return __uint_as_float(__float_as_uint(v) | sign);
}

// fp32 -> e4m3fn, round to nearest even, saturated to +-448, sign kept; v finite. The same integer steps as
// kernels/cpu/quantize.cc (f32_to_e4m3), so CPU and GPU give identical bytes.
__device__ __forceinline__ uint8_t float_to_e4m3(float v) {
  uint32_t u = __float_as_uint(v);
  const uint32_t sign = (u >> 24) & 0x80u;
  u &= 0x7FFFFFFFu;
  if (u > 0x43E00000u) u = 0x43E00000u;
  const uint32_t E = u >> 23;
  uint32_t code;
  if (E >= 121) {
    code = ((u + 0x7FFFFu + ((u >> 20) & 1u)) >> 20) - (120u << 3);
  } else {
    const uint32_t sh = 141 - E;
    if (sh >= 32) {
      code = 0;
    } else {
      const uint32_t mant = (u & 0x7FFFFFu) | 0x800000u;
      code = (mant + ((1u << (sh - 1)) - 1u) + ((mant >> sh) & 1u)) >> sh;
    }
  }
  return static_cast<uint8_t>(code | sign);
}

// Per-row e4m3 scale: the power of two that maps max(amax, 1e-4) onto at most 448, rounded down exactly as
// kernels/cpu/quantize.cc does, so CPU and GPU pick the same scale.
__device__ __forceinline__ float e4m3_pow2_scale(float amax) {
  int e = 0;
  const float m = frexpf(fmaxf(amax, 1e-4f) / 448.0f, &e);
  return ldexpf(1.0f, m == 0.5f ? e - 1 : e);
}

// Four e4m3 bytes (one 32-bit word) -> two f16x2 words holding value * 2^-8 exactly (normal and subnormal codes;
// the NaN codes are not kept NaN). Used where the GPU has no FP8 tensor cores (sm_80): a product of two such halves
// is the exact e4m3 product times 2^-16.
__device__ __forceinline__ void e4m3x4_to_f16x2_scaled(uint32_t w, uint32_t& lo, uint32_t& hi) {
  // bytes b0 b1 -> lo, b2 b3 -> hi; each half = (b & 0x80) << 8 | (b & 0x7f) << 7
  const uint32_t s = w & 0x80808080u, m = w & 0x7F7F7F7Fu;
  // spread byte0 / byte1 into bytes 0 and 2 (zeros between), then shift each into place in its 16-bit half
  const uint32_t b01_s = __byte_perm(s, 0, 0x4140) << 8;
  const uint32_t b01_m = __byte_perm(m, 0, 0x4140) << 7;
  const uint32_t b23_s = __byte_perm(s, 0, 0x4342) << 8;
  const uint32_t b23_m = __byte_perm(m, 0, 0x4342) << 7;
  lo = b01_s | b01_m;
  hi = b23_s | b23_m;
}

// Order-preserving 32-bit key of a top-k score (kernels/cpu/topk.cc): larger float -> larger key; -0 -> +0;
// non-finite -> 0, which no finite score has (finite keys are >= 0x00800000).
__device__ __forceinline__ uint32_t topk_score_key(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7f800000u) == 0x7f800000u) return 0;
  if (u == 0x80000000u) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// hist[bin] += 1 (shared memory) for every lane with active set. Plain shared atomics: a warp-aggregated version with
// __match_any_sync measured slower on the H100 (the top-k passes took ~5 µs each with it).
__device__ __forceinline__ void warp_hist_add(uint32_t* hist, uint32_t bin, bool active) {
  if (active) atomicAdd(hist + bin, 1u);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// PDL (see pdl_enabled above). griddepcontrol.wait returns once every prerequisite grid has completed and its
// memory operations are visible; without a programmatic dependency (plain launch, pre-sm_90) both are no-ops.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...) with the programmatic-serialization attribute when PDL is on (the
// kernel must follow the PDL contract above); checks the launch.
template <typename... KArgs, typename... Args>
void launch_kernel(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (e != cudaSuccess) throw_cuda_error(e, name, __FILE__, __LINE__);
}

// cp.async 16 bytes global -> shared (L2 only, bypasses L1); src_bytes = 0 zero-fills the 16 bytes.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes = 16) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

}  // namespace cuda
}  // namespace glance
#endif  // __CUDACC__
