# The native addon (node-gyp; built by `npm install`): build/Release/glance_native.node.
#
# CPU kernels are compiled for generic x86-64 (no -mavx2 on the command line: the addon must load on any
# x86-64); the AVX2/FMA/F16C kernels are per-function target attributes selected at run time (kernels/cpu/simd.h).
#
# CUDA: `with_cuda` is 1 when nvcc is found ($CUDA_HOME/bin/nvcc, else /usr/local/cuda/bin/nvcc) unless GLANCE_CUDA=0;
# then every file of `cuda_sources` (an explicit list: add new kernels/cuda/*.cu there) is compiled by nvcc for sm_80,
# sm_90a and compute_90 PTX, and the static CUDA runtime is linked, so the addon still loads on machines without a
# GPU or driver (cudaInfo() then says why there is no device).
{
  "variables": {
    "glance_version": "<!(node -p \"require('./package.json').version\")",
    "cuda_home%": "<!(node -p \"const h = process.env.CUDA_HOME; h && require('fs').existsSync(h + '/bin/nvcc') ? h : '/usr/local/cuda'\")",
    "with_cuda%": "<!(node -p \"const f = require('fs'), h = process.env.CUDA_HOME; process.env.GLANCE_CUDA !== '0' && ((h && f.existsSync(h + '/bin/nvcc')) || f.existsSync('/usr/local/cuda/bin/nvcc')) ? 1 : 0\")",
    "cuda_sources": [
      "kernels/cuda/device.cu",
      "kernels/cuda/bench_support.cu",
      "kernels/cuda/hadamard_quantize.cu",
      "kernels/cuda/indexer.cu",
      "kernels/cuda/topk.cu",
      "kernels/cuda/sparse_mla.cu",
      "kernels/binding/cuda_attention.cc",
      "kernels/cuda/gemm.cu",
      "kernels/cuda/gemv.cu",
      "kernels/cuda/model_ops.cu",
      "kernels/cuda/model_runner.cu",
      "kernels/binding/cuda_model.cc",
    ],
  },
  "targets": [
    {
      "target_name": "glance_native",
      "sources": [
        "kernels/binding/addon.cc",
        "kernels/binding/args.cc",
        "kernels/binding/cuda.cc",
        "kernels/binding/weight.cc",
        "kernels/cpu/bandwidth.cc",
        "kernels/cpu/cache_memory.cc",
        "kernels/cpu/dequant.cc",
        "kernels/cpu/elementwise.cc",
        "kernels/cpu/hadamard.cc",
        "kernels/cpu/indexer.cc",
        "kernels/cpu/indexer_fp8.cc",
        "kernels/cpu/indexer_fp8_amx.cc",
        "kernels/cpu/indexer_topk.cc",
        "kernels/cpu/mapped_file.cc",
        "kernels/cpu/matmul.cc",
        "kernels/cpu/microkernel.cc",
        "kernels/cpu/mla.cc",
        "kernels/cpu/moe.cc",
        "kernels/cpu/norm.cc",
        "kernels/cpu/quantize.cc",
        "kernels/cpu/rope.cc",
        "kernels/cpu/simd.cc",
        "kernels/cpu/thread_pool.cc",
        "kernels/cpu/topk.cc",
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "GLANCE_VERSION=\"<(glance_version)\"",
      ],
      # node-gyp's common.gypi adds -fno-exceptions and -std=gnu++17; argument errors are C++ exceptions that
      # node-addon-api turns into JS exceptions.
      "cflags!": ["-fno-exceptions", "-Wno-unused-parameter"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags": ["-O3", "-Wall", "-Wextra", "-fvisibility=hidden"],
      "cflags_cc": ["-std=c++17", "-fexceptions"],
      "ldflags": ["-pthread"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "OTHER_CFLAGS": ["-O3", "-Wall", "-Wextra"],
      },
      "conditions": [
        ["with_cuda==1", {
          "sources": ["<@(cuda_sources)"],
          "defines": ["GLANCE_WITH_CUDA=1"],
          "include_dirs": ["<(cuda_home)/include"],
          "libraries": ["-L<(cuda_home)/lib64", "-lcudart_static", "-ldl", "-lrt", "-lpthread"],
          "rules": [{
            "rule_name": "nvcc",
            "extension": "cu",
            "inputs": ["<(RULE_INPUT_PATH)"],
            "outputs": ["<(INTERMEDIATE_DIR)/<(RULE_INPUT_ROOT).cu.o"],
            "action": ["<(cuda_home)/bin/nvcc", "-c", "-O3", "-std=c++17", "-Xcompiler", "-fPIC",
                       "-Xcompiler", "-fvisibility=hidden", "--expt-relaxed-constexpr", "--extended-lambda", "-lineinfo",
                       "-gencode", "arch=compute_80,code=sm_80",
                       "-gencode", "arch=compute_90a,code=sm_90a",
                       "-gencode", "arch=compute_90,code=compute_90",
                       "<@(_inputs)", "-o", "<@(_outputs)"],
            "message": "NVCC <(RULE_INPUT_PATH)",
            "process_outputs_as_sources": 1,
          }],
        }],
      ],
    },
  ],
}
