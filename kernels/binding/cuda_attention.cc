// Op-level N-API bindings of the CUDA attention kernels (kernels/cuda: indexer, top-k, sparse MLA, Hadamard and
// FP8 quantisation) under the addon's `cuda` namespace, plus device-side benchmarks of them.
//
// Ops: host arrays in, host arrays out, the same argument checks as the CPU ops; each call allocates device buffers,
// uploads, runs on a private stream, downloads, and frees (for tests; the engine keeps tensors on the device).
// Benchmarks (bench*): inputs are generated on the device, inputs larger than what the L2 cache holds are rotated
// where repeated runs would otherwise hit the cache, and times are medians of CUDA-event intervals.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../cuda/bench_support.cuh"
#include "../cuda/common.cuh"
#include "../cuda/hadamard_quantize.cuh"
#include "../cuda/indexer.cuh"
#include "../cuda/sparse_mla.cuh"
#include "../cuda/topk.cuh"
#include "args.h"
#include "cuda.h"

namespace glance {
namespace binding {

namespace {

constexpr int64_t kMaxDim = INT32_MAX;

class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) {
      GLANCE_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
      // workspaces with counters (sparse MLA, top-k) start at zero; synchronised, since the ops run on non-blocking
      // streams that a legacy-stream memset is not ordered with
      GLANCE_CUDA_CHECK(cudaMemset(ptr_, 0, bytes));
      GLANCE_CUDA_CHECK(cudaDeviceSynchronize());
    }
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_;
};

class Stream {
 public:
  Stream() { GLANCE_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~Stream() { cudaStreamDestroy(s_); }
  operator cudaStream_t() const { return s_; }
  void sync() const { GLANCE_CUDA_CHECK(cudaStreamSynchronize(s_)); }

 private:
  cudaStream_t s_ = nullptr;
};

template <class T>
void upload(const DeviceBuffer& d, const T* host, int64_t count, cudaStream_t s) {
  if (count > 0)
    GLANCE_CUDA_CHECK(cudaMemcpyAsync(d.as<void>(), host, static_cast<size_t>(count) * sizeof(T), cudaMemcpyHostToDevice, s));
}
template <class T>
void download(T* host, const DeviceBuffer& d, int64_t count, cudaStream_t s) {
  if (count > 0)
    GLANCE_CUDA_CHECK(cudaMemcpyAsync(host, d.as<void>(), static_cast<size_t>(count) * sizeof(T), cudaMemcpyDeviceToHost, s));
}

void ensure_device(const Args& a) {
  static int state = 0;  // 0 unknown, 1 usable
  if (state == 1) return;
  const cuda::DeviceInfo d = cuda::device_info();
  if (!d.available) throw Napi::Error::New(a.env(), std::string(a.op()) + ": " + d.reason);
  state = 1;
}

// Runs body, turning CUDA failures into JS Errors and unsupported shapes into RangeErrors, both naming the op.
Napi::Value guarded(const Args& a, const std::function<Napi::Value()>& body) {
  ensure_device(a);
  try {
    return body();
  } catch (const cuda::CudaError& e) {
    throw Napi::Error::New(a.env(), std::string(a.op()) + ": " + e.what());
  } catch (const std::invalid_argument& e) {
    throw Napi::RangeError::New(a.env(), std::string(a.op()) + ": " + e.what());
  }
}

// ---- ops ------------------------------------------------------------------------------------------------------

Napi::Value HadamardRows(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.hadamardRows", 3);
  auto x = a.f32(0, "x");
  const int64_t N = a.integer(1, "N", 0, kMaxDim);
  const int64_t D = a.integer(2, "D", 0, kMaxDim);
  if (D < 1 || (D & (D - 1)) != 0) a.range_error("D must be a power of two, got " + std::to_string(D));
  a.expect_length(x, a.product({N, D}, "N*D"), shape_str("N*D", {N, D}));
  return guarded(a, [&]() -> Napi::Value {
    Stream s;
    DeviceBuffer dx(x.bytes());
    upload(dx, x.data, x.length, s);
    cuda::hadamard_rows(dx.as<float>(), N, D, s);
    download(x.data, dx, x.length, s);
    s.sync();
    return info.Env().Undefined();
  });
}

Napi::Value QuantizeFp8Rows(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.quantizeFp8Rows", 5);
  auto out = a.u8(0, "out");
  auto scales = a.f32(1, "scales");
  auto x = a.f32(2, "x");
  const int64_t N = a.integer(3, "N", 0, kMaxDim);
  const int64_t D = a.integer(4, "D", 0, kMaxDim);
  const int64_t n = a.product({N, D}, "N*D");
  a.expect_length(x, n, shape_str("N*D", {N, D}));
  a.expect_length(out, n, shape_str("N*D", {N, D}));
  a.expect_length(scales, N, shape_str("N", {N}));
  return guarded(a, [&]() -> Napi::Value {
    Stream s;
    DeviceBuffer dx(x.bytes()), dout(out.bytes()), dsc(scales.bytes());
    upload(dx, x.data, x.length, s);
    cuda::quantize_fp8_rows(dout.as<uint8_t>(), dsc.as<float>(), dx.as<float>(), N, D, s);
    download(out.data, dout, out.length, s);
    download(scales.data, dsc, scales.length, s);
    s.sync();
    return info.Env().Undefined();
  });
}

struct IndexerArgs {
  ArrayArg<uint8_t> q, keys;
  ArrayArg<float> weights, keyScales;
  ArrayArg<int32_t> positions;
  int64_t T, S, Hi, D;
};

IndexerArgs indexer_args(const Args& a, size_t first) {
  IndexerArgs r;
  r.q = a.u8(first, "q");
  r.weights = a.f32(first + 1, "weights");
  r.keys = a.u8(first + 2, "keys");
  r.keyScales = a.f32(first + 3, "keyScales");
  r.T = a.integer(first + 4, "T", 0, kMaxDim);
  r.S = a.integer(first + 5, "S", 0, kMaxDim);
  r.Hi = a.integer(first + 6, "Hi", 0, 4096);
  r.D = a.integer(first + 7, "D", 0, 4096);
  r.positions = a.i32(first + 8, "positions");
  a.expect_length(r.q, a.product({r.T, r.Hi, r.D}, "T*Hi*D"), shape_str("T*Hi*D", {r.T, r.Hi, r.D}));
  a.expect_length(r.weights, a.product({r.T, r.Hi}, "T*Hi"), shape_str("T*Hi", {r.T, r.Hi}));
  a.expect_min_length(r.keys, a.product({r.S, r.D}, "S*D"), shape_str("S*D", {r.S, r.D}));
  a.expect_min_length(r.keyScales, r.S, shape_str("S", {r.S}));
  a.expect_length(r.positions, r.T, shape_str("T", {r.T}));
  return r;
}

struct IndexerDevice {
  DeviceBuffer q, w, k, ks, pos;
  IndexerDevice(const IndexerArgs& r, cudaStream_t s)
      : q(r.q.bytes()), w(r.weights.bytes()), k(static_cast<size_t>(r.S * r.D)), ks(static_cast<size_t>(r.S) * 4),
        pos(r.positions.bytes()) {
    upload(q, r.q.data, r.q.length, s);
    upload(w, r.weights.data, r.weights.length, s);
    upload(k, r.keys.data, r.S * r.D, s);
    upload(ks, r.keyScales.data, r.S, s);
    upload(pos, r.positions.data, r.positions.length, s);
  }
};

Napi::Value IndexerScoresFp8(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.indexerScoresFp8", 10);
  auto out = a.f32(0, "out");
  const IndexerArgs r = indexer_args(a, 1);
  a.expect_length(out, a.product({r.T, r.S}, "T*S"), shape_str("T*S", {r.T, r.S}));
  return guarded(a, [&]() -> Napi::Value {
    Stream s;
    IndexerDevice d(r, s);
    DeviceBuffer dout(out.bytes());
    cuda::indexer_scores_fp8(dout.as<float>(), r.S, d.q.as<uint8_t>(), d.w.as<float>(), d.k.as<uint8_t>(),
                             d.ks.as<float>(), r.T, r.S, r.Hi, r.D, d.pos.as<int32_t>(), s);
    download(out.data, dout, out.length, s);
    s.sync();
    return info.Env().Undefined();
  });
}

Napi::Value IndexerTopk(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.indexerTopk", 12);
  auto idx = a.i32(0, "idx");
  const IndexerArgs r = indexer_args(a, 1);
  const int64_t k = a.integer(10, "k", 0, kMaxDim);
  const int64_t chunkRows = a.integer(11, "chunkRows", 0, kMaxDim);
  a.expect_length(idx, a.product({r.T, k}, "T*k"), shape_str("T*k", {r.T, k}));
  return guarded(a, [&]() -> Napi::Value {
    Stream s;
    IndexerDevice d(r, s);
    DeviceBuffer didx(idx.bytes());
    DeviceBuffer ws(cuda::indexer_topk_workspace_bytes(r.T, r.S, chunkRows));
    cuda::indexer_topk(didx.as<int32_t>(), d.q.as<uint8_t>(), d.w.as<float>(), d.k.as<uint8_t>(), d.ks.as<float>(),
                       r.T, r.S, r.Hi, r.D, d.pos.as<int32_t>(), r.positions.data, k, chunkRows, ws.as<void>(),
                       ws.bytes(), s);
    download(idx.data, didx, idx.length, s);
    s.sync();
    return info.Env().Undefined();
  });
}

Napi::Value TopK(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.topk", 5);
  auto idx = a.i32(0, "idx");
  auto scores = a.f32(1, "scores");
  const int64_t T = a.integer(2, "T", 0, kMaxDim);
  const int64_t S = a.integer(3, "S", 0, kMaxDim);
  const int64_t k = a.integer(4, "k", 0, kMaxDim);
  a.expect_length(scores, a.product({T, S}, "T*S"), shape_str("T*S", {T, S}));
  a.expect_length(idx, a.product({T, k}, "T*k"), shape_str("T*k", {T, k}));
  return guarded(a, [&]() -> Napi::Value {
    Stream s;
    DeviceBuffer dsc(scores.bytes()), didx(idx.bytes()), ws(cuda::topk_workspace_bytes(T, S));
    upload(dsc, scores.data, scores.length, s);
    cuda::topk(didx.as<int32_t>(), dsc.as<float>(), S, T, S, k, ws.as<void>(), ws.bytes(), s);
    download(idx.data, didx, idx.length, s);
    s.sync();
    return info.Env().Undefined();
  });
}

Napi::Value SparseMlaAttention(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.sparseMlaAttention", 11);
  auto out = a.f32(0, "out");
  auto q = a.u16(1, "q");
  auto kv = a.u16(2, "kv");
  const int64_t S = a.integer(3, "S", 0, kMaxDim);
  const int64_t T = a.integer(4, "T", 0, kMaxDim);
  const int64_t H = a.integer(5, "H", 0, kMaxDim);
  const int64_t L = a.integer(6, "kvLora", 0, kMaxDim);
  const int64_t R = a.integer(7, "rope", 0, kMaxDim);
  const double scale = a.number(8, "scale");
  auto indices = a.i32(9, "indices");
  const int64_t k = a.integer(10, "k", 0, kMaxDim);
  a.expect_length(q, a.product({T, H, L + R}, "T*H*(kvLora+rope)"), shape_str("T*H*(kvLora+rope)", {T, H, L + R}));
  a.expect_min_length(kv, a.product({S, L + R}, "S*(kvLora+rope)"), shape_str("S*(kvLora+rope)", {S, L + R}));
  a.expect_length(out, a.product({T, H, L}, "T*H*kvLora"), shape_str("T*H*kvLora", {T, H, L}));
  a.expect_length(indices, a.product({T, k}, "T*k"), shape_str("T*k", {T, k}));
  for (int64_t i = 0; i < indices.length; i++)
    if (indices.data[i] < -1 || indices.data[i] >= S)
      a.range_error("indices[" + std::to_string(i) + "] = " + std::to_string(indices.data[i]) + " is outside [-1, S) (S = " +
                    std::to_string(S) + ")");
  return guarded(a, [&]() -> Napi::Value {
    Stream s;
    DeviceBuffer dq(q.bytes()), dkv(static_cast<size_t>(S * (L + R)) * 2), didx(indices.bytes()), dout(out.bytes());
    DeviceBuffer ws(cuda::sparse_mla_workspace_bytes(T, H, L, R, k));
    upload(dq, q.data, q.length, s);
    upload(dkv, kv.data, S * (L + R), s);
    upload(didx, indices.data, indices.length, s);
    cuda::sparse_mla_attention(dout.as<float>(), dq.as<uint16_t>(), dkv.as<uint16_t>(), S, T, H, L, R,
                               static_cast<float>(scale), didx.as<int32_t>(), k, ws.as<void>(), ws.bytes(), s);
    download(out.data, dout, out.length, s);
    s.sync();
    return info.Env().Undefined();
  });
}

// ---- benchmarks -----------------------------------------------------------------------------------------------

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

class Events {
 public:
  Events() {
    GLANCE_CUDA_CHECK(cudaEventCreate(&a_));
    GLANCE_CUDA_CHECK(cudaEventCreate(&b_));
  }
  ~Events() {
    cudaEventDestroy(a_);
    cudaEventDestroy(b_);
  }
  // Median microseconds of run(i) over iters runs after warmup runs; run(i) enqueues on s.
  double median_us(cudaStream_t s, int warmup, int iters, const std::function<void(int)>& run) {
    for (int i = 0; i < warmup; i++) run(i);
    GLANCE_CUDA_CHECK(cudaStreamSynchronize(s));
    std::vector<double> t;
    for (int i = 0; i < iters; i++) {
      GLANCE_CUDA_CHECK(cudaEventRecord(a_, s));
      run(i);
      GLANCE_CUDA_CHECK(cudaEventRecord(b_, s));
      GLANCE_CUDA_CHECK(cudaEventSynchronize(b_));
      float ms = 0;
      GLANCE_CUDA_CHECK(cudaEventElapsedTime(&ms, a_, b_));
      t.push_back(ms * 1000.0);
    }
    return median(t);
  }

 private:
  cudaEvent_t a_ = nullptr, b_ = nullptr;
};

class Graph {
 public:
  Graph(cudaStream_t s, const std::function<void()>& body) {
    GLANCE_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    try {
      body();
    } catch (...) {
      cudaGraph_t g = nullptr;
      cudaStreamEndCapture(s, &g);
      if (g) cudaGraphDestroy(g);
      throw;
    }
    GLANCE_CUDA_CHECK(cudaStreamEndCapture(s, &graph_));
    GLANCE_CUDA_CHECK(cudaGraphInstantiate(&exec_, graph_, 0));
  }
  ~Graph() {
    if (exec_) cudaGraphExecDestroy(exec_);
    if (graph_) cudaGraphDestroy(graph_);
  }
  Graph(const Graph&) = delete;
  void launch(cudaStream_t s) const { GLANCE_CUDA_CHECK(cudaGraphLaunch(exec_, s)); }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

int64_t opt_int(const Args& a, Napi::Object o, const char* key, int64_t def, int64_t lo, int64_t hi) {
  const Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  if (!v.IsNumber()) a.type_error(std::string("opts.") + key + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d || d < static_cast<double>(lo) || d > static_cast<double>(hi))
    a.range_error(std::string("opts.") + key + " must be an integer in [" + std::to_string(lo) + ", " +
                  std::to_string(hi) + "]");
  return static_cast<int64_t>(d);
}

// Copies of an input of `bytes` so that rotating through them defeats the L2 cache (4x L2 in all, at least 1).
int rotation_copies(size_t bytes, int max_copies) {
  const cuda::DeviceInfo d = cuda::device_info();
  const size_t target = static_cast<size_t>(std::max<int64_t>(d.l2_bytes, 50 << 20)) * 4;
  return static_cast<int>(std::min<size_t>(max_copies, std::max<size_t>(1, (target + bytes - 1) / bytes)));
}

// opts.once: run the op a single time on the generated inputs and return {once: true} (no warm-up, no timing, no
// graphs), so that a profiler (bench/gpu-profile.sh) sees exactly one launch of each of its kernels.
bool opt_once(Napi::Object o) { return o.Get("once").IsBoolean() && o.Get("once").As<Napi::Boolean>().Value(); }

Napi::Value once_result(Napi::Env env, cudaStream_t s) {
  GLANCE_CUDA_CHECK(cudaStreamSynchronize(s));
  Napi::Object r = Napi::Object::New(env);
  r.Set("once", true);
  return r;
}

// {gbps}: device-to-device copy bandwidth, bytes read + bytes written per second.
Napi::Value BenchCopy(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.benchCopy", 1);
  const int64_t mb = a.integer(0, "megabytes", 1, 16384);
  return guarded(a, [&]() -> Napi::Value {
    Stream s;
    const size_t bytes = static_cast<size_t>(mb) << 20;
    DeviceBuffer src(bytes), dst(bytes);
    GLANCE_CUDA_CHECK(cudaMemsetAsync(src.as<void>(), 1, bytes, s));
    Events ev;
    const double us = ev.median_us(s, 3, 20, [&](int) {
      GLANCE_CUDA_CHECK(cudaMemcpyAsync(dst.as<void>(), src.as<void>(), bytes, cudaMemcpyDeviceToDevice, s));
    });
    Napi::Object r = Napi::Object::New(info.Env());
    r.Set("gbps", 2.0 * bytes / (us * 1e-6) / 1e9);
    r.Set("us", us);
    return r;
  });
}

// Decode-step token selection: indexer scores over S keys for T queries, then top-k (indexer_topk, with the level-1
// histogram fused into the scores kernel). opts {S, Hi, D, k, T, iters, prefetch?}. Returns medians in µs:
// indexerUs / indexerGraphUs (scores alone), topkGraphUs (stand-alone top-k of those scores), streamUs (the fused
// pipeline launched on a stream), graphUs (the fused pipeline as one CUDA graph); keyBytes (key cache bytes read).
// Stream figures include the host's launch gaps; graph figures are what a captured decode step pays.
Napi::Value BenchIndexerDecode(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.benchIndexerDecode", 1);
  if (!info[0].IsObject()) a.type_error("opts must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  const int64_t S = opt_int(a, o, "S", 131072, 1, 1 << 28);
  const int64_t Hi = opt_int(a, o, "Hi", 64, 1, 128);
  const int64_t D = opt_int(a, o, "D", 128, 1, 4096);
  const int64_t k = opt_int(a, o, "k", 2048, 1, 1 << 20);
  const int64_t T = opt_int(a, o, "T", 1, 1, 64);
  const int iters = static_cast<int>(opt_int(a, o, "iters", 50, 1, 10000));
  const int64_t prefetch = opt_int(a, o, "prefetch", -1, -1, 5);  // indexer kernel variant (indexer.cu)
  if (prefetch < 0) unsetenv("GLANCE_INDEXER_PREFETCH");
  else setenv("GLANCE_INDEXER_PREFETCH", std::to_string(prefetch).c_str(), 1);
  const int64_t single = opt_int(a, o, "topkSingle", -1, -1, 1);
  if (single < 0) unsetenv("GLANCE_TOPK_SINGLE");
  else setenv("GLANCE_TOPK_SINGLE", single ? "1" : "0", 1);
  return guarded(a, [&]() -> Napi::Value {
    Stream s;
    const size_t key_bytes = static_cast<size_t>(S) * (D + 4);
    const int copies = rotation_copies(key_bytes, 64);
    std::vector<std::unique_ptr<DeviceBuffer>> keys, scales;
    for (int c = 0; c < copies; c++) {
      keys.emplace_back(new DeviceBuffer(static_cast<size_t>(S * D)));
      scales.emplace_back(new DeviceBuffer(static_cast<size_t>(S) * 4));
      cuda::fill_random_e4m3(keys.back()->as<uint8_t>(), S * D, 100 + c, s);
      cuda::fill_random_pow2(scales.back()->as<float>(), S, -12, -6, 200 + c, s);
    }
    DeviceBuffer q(static_cast<size_t>(T * Hi * D)), w(static_cast<size_t>(T * Hi) * 4), pos(static_cast<size_t>(T) * 4);
    cuda::fill_random_e4m3(q.as<uint8_t>(), T * Hi * D, 7, s);
    cuda::fill_random_f32(w.as<float>(), T * Hi, -0.01f, 0.02f, 8, s);
    cuda::fill_iota(pos.as<int32_t>(), T, static_cast<int32_t>(S - T), s);
    DeviceBuffer logits(static_cast<size_t>(T * S) * 4), idx(static_cast<size_t>(T * k) * 4);
    DeviceBuffer ws(cuda::topk_workspace_bytes(T, S));
    DeviceBuffer fused_ws(cuda::indexer_topk_workspace_bytes(T, S, T));
    auto scores = [&](int i) {
      const int c = i % copies;
      cuda::indexer_scores_fp8(logits.as<float>(), S, q.as<uint8_t>(), w.as<float>(), keys[c]->as<uint8_t>(),
                               scales[c]->as<float>(), T, S, Hi, D, pos.as<int32_t>(), s);
    };
    auto select = [&]() {
      cuda::topk(idx.as<int32_t>(), logits.as<float>(), S, T, S, k, ws.as<void>(), ws.bytes(), s);
    };
    auto fused = [&](int i) {
      const int c = i % copies;
      cuda::indexer_topk(idx.as<int32_t>(), q.as<uint8_t>(), w.as<float>(), keys[c]->as<uint8_t>(),
                         scales[c]->as<float>(), T, S, Hi, D, pos.as<int32_t>(), nullptr, k, T, fused_ws.as<void>(),
                         fused_ws.bytes(), s);
    };
    if (opt_once(o)) {
      fused(0);
      return once_result(info.Env(), s);
    }
    Events ev;
    const double indexer_us = ev.median_us(s, 5, iters, scores);
    const double stream_us = ev.median_us(s, 5, iters, fused);
    std::vector<std::unique_ptr<Graph>> g_scores, g_fused;
    for (int c = 0; c < copies; c++) {
      g_scores.emplace_back(new Graph(s, [&]() { scores(c); }));
      g_fused.emplace_back(new Graph(s, [&]() { fused(c); }));
    }
    Graph g_topk(s, [&]() { select(); });
    const double indexer_graph_us = ev.median_us(s, 5, iters, [&](int i) { g_scores[i % copies]->launch(s); });
    const double topk_graph_us = ev.median_us(s, 5, iters, [&](int) { g_topk.launch(s); });
    const double graph_us = ev.median_us(s, 5, iters, [&](int i) { g_fused[i % copies]->launch(s); });
    Napi::Object r = Napi::Object::New(info.Env());
    r.Set("indexerUs", indexer_us);
    r.Set("indexerGraphUs", indexer_graph_us);
    r.Set("topkGraphUs", topk_graph_us);
    r.Set("streamUs", stream_us);
    r.Set("graphUs", graph_us);
    r.Set("keyBytes", static_cast<double>(key_bytes));
    r.Set("copies", copies);
    return r;
  });
}

// Sparse MLA over k selected rows of an S-row bf16 latent cache. opts {S, T, H, kvLora, rope, k, iters}.
// Returns medians: streamUs, graphUs, and flops (2·T·H·k·(D + kvLora)).
Napi::Value BenchSparseMla(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.benchSparseMla", 1);
  if (!info[0].IsObject()) a.type_error("opts must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  const int64_t S = opt_int(a, o, "S", 131072, 1, 1 << 28);
  const int64_t T = opt_int(a, o, "T", 1, 1, 1 << 20);
  const int64_t H = opt_int(a, o, "H", 128, 1, 1024);
  const int64_t L = opt_int(a, o, "kvLora", 512, 16, 512);
  const int64_t R = opt_int(a, o, "rope", 64, 0, 128);
  const int64_t k = opt_int(a, o, "k", 2048, 1, 1 << 20);
  const int iters = static_cast<int>(opt_int(a, o, "iters", 30, 1, 10000));
  const bool graph = !o.Get("graph").IsBoolean() || o.Get("graph").As<Napi::Boolean>().Value();
  return guarded(a, [&]() -> Napi::Value {
    Stream s;
    const int64_t D = L + R;
    DeviceBuffer kv(static_cast<size_t>(S * D) * 2), q(static_cast<size_t>(T * H * D) * 2),
        out(static_cast<size_t>(T * H * L) * 4);
    cuda::fill_random_bf16(kv.as<uint16_t>(), S * D, 1.0f, 11, s);
    cuda::fill_random_bf16(q.as<uint16_t>(), T * H * D, 1.0f, 12, s);
    // Several index sets so that repeated runs gather different rows.
    const int sets = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(16, (int64_t(256) << 20) / (T * k * 4 + 1))));
    std::vector<std::unique_ptr<DeviceBuffer>> idx;
    for (int c = 0; c < sets; c++) {
      idx.emplace_back(new DeviceBuffer(static_cast<size_t>(T * k) * 4));
      cuda::fill_random_index(idx.back()->as<int32_t>(), T * k, static_cast<int32_t>(S), 300 + c, s);
    }
    DeviceBuffer ws(cuda::sparse_mla_workspace_bytes(T, H, L, R, k));
    const float scale = 1.0f / std::sqrt(static_cast<float>(128 + R));
    auto run = [&](int i) {
      cuda::sparse_mla_attention(out.as<float>(), q.as<uint16_t>(), kv.as<uint16_t>(), S, T, H, L, R, scale,
                                 idx[i % sets]->as<int32_t>(), k, ws.as<void>(), ws.bytes(), s);
    };
    if (opt_once(o)) {
      run(0);
      return once_result(info.Env(), s);
    }
    Events ev;
    const double stream_us = ev.median_us(s, 3, iters, run);
    double graph_us = 0;
    if (graph) {
      std::vector<std::unique_ptr<Graph>> graphs;
      for (int c = 0; c < sets; c++) graphs.emplace_back(new Graph(s, [&]() { run(c); }));
      graph_us = ev.median_us(s, 3, iters, [&](int i) { graphs[i % sets]->launch(s); });
    }
    Napi::Object r = Napi::Object::New(info.Env());
    r.Set("streamUs", stream_us);
    r.Set("graphUs", graph_us);
    r.Set("flops", 2.0 * T * H * k * static_cast<double>(D + L));
    return r;
  });
}

// Causal prefill token selection over T tokens (S = T keys, positions 0..T-1), chunked.
// opts {T, Hi, D, k, chunkRows, iters}. Returns {ms} (median) and chunkRows used.
Napi::Value BenchIndexerPrefill(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.benchIndexerPrefill", 1);
  if (!info[0].IsObject()) a.type_error("opts must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  const int64_t T = opt_int(a, o, "T", 131072, 1, 1 << 20);
  const int64_t Hi = opt_int(a, o, "Hi", 64, 1, 128);
  const int64_t D = opt_int(a, o, "D", 128, 1, 4096);
  const int64_t k = opt_int(a, o, "k", 2048, 1, 1 << 20);
  int64_t chunk = opt_int(a, o, "chunkRows", 0, 0, 1 << 20);
  const int iters = static_cast<int>(opt_int(a, o, "iters", 2, 1, 100));
  return guarded(a, [&]() -> Napi::Value {
    Stream s;
    if (chunk <= 0) chunk = cuda::indexer_topk_default_chunk_rows(T, T);
    DeviceBuffer keys(static_cast<size_t>(T * D)), ks(static_cast<size_t>(T) * 4), q(static_cast<size_t>(T * Hi * D)),
        w(static_cast<size_t>(T * Hi) * 4), pos(static_cast<size_t>(T) * 4), idx(static_cast<size_t>(T * k) * 4);
    cuda::fill_random_e4m3(keys.as<uint8_t>(), T * D, 21, s);
    cuda::fill_random_pow2(ks.as<float>(), T, -12, -6, 22, s);
    cuda::fill_random_e4m3(q.as<uint8_t>(), T * Hi * D, 23, s);
    cuda::fill_random_f32(w.as<float>(), T * Hi, -0.01f, 0.02f, 24, s);
    cuda::fill_iota(pos.as<int32_t>(), T, 0, s);
    std::vector<int32_t> pos_host(static_cast<size_t>(T));
    for (int64_t i = 0; i < T; i++) pos_host[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    DeviceBuffer ws(cuda::indexer_topk_workspace_bytes(T, T, chunk));
    auto run = [&]() {
      cuda::indexer_topk(idx.as<int32_t>(), q.as<uint8_t>(), w.as<float>(), keys.as<uint8_t>(), ks.as<float>(), T, T,
                         Hi, D, pos.as<int32_t>(), pos_host.data(), k, chunk, ws.as<void>(), ws.bytes(), s);
    };
    if (opt_once(o)) {
      run();
      return once_result(info.Env(), s);
    }
    Events ev;
    const double us = ev.median_us(s, 1, iters, [&](int) { run(); });
    // The scores alone, chunk by chunk as indexer_topk runs them (no top-k): where the time goes.
    DeviceBuffer logits(static_cast<size_t>(chunk) * T * 4);
    const double scores_us = ev.median_us(s, 1, iters, [&](int) {
      for (int64_t t0 = 0; t0 < T; t0 += chunk) {
        const int64_t n = std::min<int64_t>(chunk, T - t0), s_used = std::min<int64_t>(T, t0 + n);
        cuda::indexer_scores_fp8(logits.as<float>(), s_used, q.as<uint8_t>() + t0 * Hi * D, w.as<float>() + t0 * Hi,
                                 keys.as<uint8_t>(), ks.as<float>(), n, s_used, Hi, D, pos.as<int32_t>() + t0, s);
      }
    });
    Napi::Object r = Napi::Object::New(info.Env());
    r.Set("ms", us / 1000.0);
    r.Set("scoresMs", scores_us / 1000.0);
    r.Set("chunkRows", static_cast<double>(chunk));
    // Useful indexer MMA work (causal half of the T x T logits): 2·Hi·D·T(T+1)/2.
    r.Set("flops", 2.0 * Hi * D * (static_cast<double>(T) * (T + 1) / 2));
    return r;
  });
}

}  // namespace

void register_cuda_attention_ops(Napi::Env env, Napi::Object cuda) {
  struct Fn {
    const char* name;
    Napi::Value (*fn)(const Napi::CallbackInfo&);
  };
  const Fn fns[] = {
      {"hadamardRows", HadamardRows},
      {"quantizeFp8Rows", QuantizeFp8Rows},
      {"indexerScoresFp8", IndexerScoresFp8},
      {"indexerTopk", IndexerTopk},
      {"topk", TopK},
      {"sparseMlaAttention", SparseMlaAttention},
      {"benchCopy", BenchCopy},
      {"benchIndexerDecode", BenchIndexerDecode},
      {"benchSparseMla", BenchSparseMla},
      {"benchIndexerPrefill", BenchIndexerPrefill},
  };
  for (const Fn& f : fns) cuda.Set(f.name, Napi::Function::New(env, f.fn, f.name));
}

}  // namespace binding
}  // namespace glance
