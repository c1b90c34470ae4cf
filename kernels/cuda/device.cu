// Device discovery for cudaInfo() / backends(): what CUDA this process can use, without throwing. With the static
// CUDA runtime the addon loads on machines without a driver; cudaGetDeviceCount then fails (rc 35 "CUDA driver
// version is insufficient" with no driver at all, 100 "no CUDA-capable device" with a driver and no GPU) and we
// report that reason instead of a device.
#include <cstdlib>

#include "common.cuh"

namespace glance {
namespace cuda {

DeviceInfo device_info() {
  DeviceInfo info;
  cudaRuntimeGetVersion(&info.runtime_version);
  cudaDriverGetVersion(&info.driver_version);
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    info.reason = std::string("no CUDA device: ") + cudaGetErrorString(rc) + " (" + cudaGetErrorName(rc) + ", rc " +
                  std::to_string(static_cast<int>(rc)) + ")";
    return info;
  }
  info.count = count;
  if (count == 0) {
    info.reason = "no CUDA device: cudaGetDeviceCount returned 0";
    return info;
  }
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) dev = 0;
  cudaDeviceProp p;
  const cudaError_t prc = cudaGetDeviceProperties(&p, dev);
  if (prc != cudaSuccess) {
    cudaGetLastError();
    info.reason = std::string("no usable CUDA device: cudaGetDeviceProperties failed: ") + cudaGetErrorString(prc);
    return info;
  }
  info.device = dev;
  info.name = p.name;
  info.cc_major = p.major;
  info.cc_minor = p.minor;
  info.sm_count = p.multiProcessorCount;
  info.total_memory = static_cast<int64_t>(p.totalGlobalMem);
  info.l2_bytes = p.l2CacheSize;
  // This build carries sm_80 and sm_90a machine code and compute_90 PTX: sm_80..sm_89 run the sm_80 code, sm_90
  // and later the sm_90a code or the PTX (JIT). Anything older has no kernel image.
  if (p.major < 8) {
    info.reason = std::string("CUDA device ") + p.name + " has compute capability " + std::to_string(p.major) + "." +
                  std::to_string(p.minor) + "; this build needs 8.0 or newer";
    return info;
  }
  info.available = true;
  return info;
}

bool pdl_enabled() {
  static const bool on = [] {
    if (const char* e = std::getenv("GLANCE_PDL"))
      if (e[0] == '0') return false;
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return major >= 9;
  }();
  return on;
}

int max_shared_memory_per_block() {
  int dev = 0, bytes = 0;
  GLANCE_CUDA_CHECK(cudaGetDevice(&dev));
  GLANCE_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return bytes;
}

}  // namespace cuda
}  // namespace glance
