#include "cuda.h"

#include <string>

#if GLANCE_WITH_CUDA
#include "../cuda/common.cuh"
#endif

namespace glance {
namespace binding {

namespace {

const char* const kNotBuilt =
    "this build of the addon has no CUDA support (nvcc was not found when it was built, or GLANCE_CUDA=0)";

Napi::Value CudaInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object r = Napi::Object::New(env);
#if GLANCE_WITH_CUDA
  const cuda::DeviceInfo d = cuda::device_info();
  r.Set("built", Napi::Boolean::New(env, true));
  r.Set("available", Napi::Boolean::New(env, d.available));
  r.Set("count", Napi::Number::New(env, d.count));
  r.Set("name", Napi::String::New(env, d.name));
  r.Set("reason", Napi::String::New(env, d.reason));
  r.Set("computeCapability", Napi::String::New(env, d.count > 0 && d.device >= 0
                                                         ? std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor)
                                                         : ""));
  r.Set("multiprocessors", Napi::Number::New(env, d.sm_count));
  r.Set("memoryBytes", Napi::Number::New(env, static_cast<double>(d.total_memory)));
  r.Set("l2Bytes", Napi::Number::New(env, static_cast<double>(d.l2_bytes)));
  r.Set("runtimeVersion", Napi::Number::New(env, d.runtime_version));
  r.Set("driverVersion", Napi::Number::New(env, d.driver_version));
#else
  r.Set("built", Napi::Boolean::New(env, false));
  r.Set("available", Napi::Boolean::New(env, false));
  r.Set("count", Napi::Number::New(env, 0));
  r.Set("name", Napi::String::New(env, ""));
  r.Set("reason", Napi::String::New(env, kNotBuilt));
  r.Set("computeCapability", Napi::String::New(env, ""));
  r.Set("multiprocessors", Napi::Number::New(env, 0));
  r.Set("memoryBytes", Napi::Number::New(env, 0));
  r.Set("l2Bytes", Napi::Number::New(env, 0));
  r.Set("runtimeVersion", Napi::Number::New(env, 0));
  r.Set("driverVersion", Napi::Number::New(env, 0));
#endif
  return r;
}

}  // namespace

Napi::Object cuda_backend_summary(Napi::Env env) {
  Napi::Object cuda = Napi::Object::New(env);
#if GLANCE_WITH_CUDA
  const cuda::DeviceInfo d = cuda::device_info();
  cuda.Set("built", Napi::Boolean::New(env, true));
  cuda.Set("devices", Napi::Number::New(env, d.available ? d.count : 0));
  if (!d.available) cuda.Set("error", Napi::String::New(env, d.reason));
#else
  cuda.Set("built", Napi::Boolean::New(env, false));
  cuda.Set("devices", Napi::Number::New(env, 0));
  cuda.Set("error", Napi::String::New(env, kNotBuilt));
#endif
  return cuda;
}

void register_cuda(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaInfo", Napi::Function::New(env, CudaInfo, "cudaInfo"));
  Napi::Object ns = Napi::Object::New(env);
#if GLANCE_WITH_CUDA
  register_cuda_attention_ops(env, ns);
  register_cuda_model_ops(env, ns);
#endif
  exports.Set("cuda", ns);
}

}  // namespace binding
}  // namespace glance
