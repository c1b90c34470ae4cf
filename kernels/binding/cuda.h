// The CUDA part of the N-API surface: cudaInfo() and the `cuda` namespace object of op-level bindings (host arrays
// in, host arrays out: each call copies its inputs to the device, runs the op on a stream, and copies the outputs
// back; for tests and benchmarks, not for the engine's hot path).
//
// Compiled in every build; without GLANCE_WITH_CUDA, cudaInfo() says the build has no CUDA and `cuda` is an empty
// object. To add ops, write a register_cuda_*_ops function (see cuda_attention.cc) and call it from
// register_cuda() in cuda.cc.
#pragma once

#include <napi.h>

namespace glance {
namespace binding {

// Sets exports.cudaInfo and exports.cuda.
void register_cuda(Napi::Env env, Napi::Object exports);

// {built, devices, error?} for backends().cuda.
Napi::Object cuda_backend_summary(Napi::Env env);

#if GLANCE_WITH_CUDA
void register_cuda_attention_ops(Napi::Env env, Napi::Object cuda);  // cuda_attention.cc
void register_cuda_model_ops(Napi::Env env, Napi::Object cuda);      // cuda_model.cc: GpuModel, modelOps
#endif

}  // namespace binding
}  // namespace glance
