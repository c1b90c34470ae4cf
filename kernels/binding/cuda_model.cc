// N-API glue of the GPU forward pass (kernels/cuda/model_runner.cuh) and op-level bindings of the model ops
// (kernels/cuda/model_ops.cuh), under the addon's `cuda` namespace:
//   cuda.GpuModel(spec, onProgress?)      weights uploaded once; .describe(), .weightBytes, .budgetBytes, .usedBytes,
//                                         .bytesPerToken, .createSequence(capacity), .dispose()
//   GpuSequence                           .forward(ids, allLogits) → Float32Array, .stepSample(id, temperature, u,
//                                         wantLogits) → {token, logits?}, .truncate(n), .length, .capacity,
//                                         .setUseGraph(on), .graphsCaptured, .copyPrefixFrom(src, n), .dispose()
//   cuda.modelOps.<op>(...)               host arrays in, host arrays out (tests and benchmarks): each call uploads
//                                         its inputs *and* the current contents of its outputs (so a poisoned output
//                                         stays poisoned where a kernel does not write), runs, and copies back.
// The TS side is sidecar/src/engine/gpu/ (the spec is built there from the WeightStore).
#include <napi.h>

#include <cuda_runtime_api.h>

#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "../cuda/common.cuh"
#include "../cuda/model_ops.cuh"
#include "../cuda/model_runner.cuh"
#include "args.h"
#include "cuda.h"
#include "weight.h"

namespace glance {
namespace binding {

namespace {

template <class F>
auto guarded(Napi::Env env, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

// ---- model description → ModelSpec ------------------------------------------------------------------------
double num(const Napi::Object& o, const char* key) {
  const Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("GpuModel spec: ") + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}
bool flag(const Napi::Object& o, const char* key) {
  const Napi::Value v = o.Get(key);
  if (!v.IsBoolean()) throw Napi::TypeError::New(o.Env(), std::string("GpuModel spec: ") + key + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}
std::vector<float> vec(const Napi::Object& o, const char* key, bool optional = false) {
  const Napi::Value v = o.Get(key);
  if (optional && (v.IsNull() || v.IsUndefined())) return {};
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Napi::TypeError::New(o.Env(), std::string("GpuModel spec: ") + key + " must be a Float32Array");
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  return std::vector<float>(a.Data(), a.Data() + a.ElementLength());
}
Weight weight(const Napi::Object& o, const char* key, const std::string& where) {
  return NativeWeight::FromValue(o.Env(), o.Get(key), where + "." + key);
}
cuda::HostMlp mlp(const Napi::Object& o, const std::string& where) {
  return {weight(o, "gate", where), weight(o, "up", where), weight(o, "down", where)};
}

cuda::ModelSpec parse_spec(const Napi::Object& o) {
  cuda::ModelSpec s;
  s.vocab = static_cast<int>(num(o, "vocab"));
  s.hidden = static_cast<int>(num(o, "hidden"));
  s.heads = static_cast<int>(num(o, "heads"));
  s.q_lora = static_cast<int>(num(o, "qLoraRank"));
  s.kv_lora = static_cast<int>(num(o, "kvLoraRank"));
  s.nope = static_cast<int>(num(o, "nope"));
  s.rope = static_cast<int>(num(o, "rope"));
  s.v_head = static_cast<int>(num(o, "vHeadDim"));
  s.index_heads = static_cast<int>(num(o, "indexHeads"));
  s.index_dim = static_cast<int>(num(o, "indexDim"));
  s.index_topk = static_cast<int>(num(o, "indexTopk"));
  s.experts = static_cast<int>(num(o, "experts"));
  s.experts_per_tok = static_cast<int>(num(o, "expertsPerTok"));
  s.n_group = static_cast<int>(num(o, "nGroup"));
  s.topk_group = static_cast<int>(num(o, "topkGroup"));
  s.scoring = static_cast<int>(num(o, "scoring"));
  s.method = static_cast<int>(num(o, "method"));
  s.norm_topk = flag(o, "normTopk");
  s.routed_scale = static_cast<float>(num(o, "routedScale"));
  s.rms_eps = static_cast<float>(num(o, "rmsEps"));
  s.softmax_scale = static_cast<float>(num(o, "softmaxScale"));
  s.rope_attention_factor = static_cast<float>(num(o, "ropeAttentionFactor"));
  s.inv_freq = vec(o, "invFreq");
  s.sparse = flag(o, "sparse");
  s.indexer_fp8 = flag(o, "indexerFp8");
  s.kv_cache_fp32 = flag(o, "kvCacheFp32");
  s.gemm_precision = static_cast<int>(num(o, "gemmPrecision"));
  s.tuned_attention = flag(o, "tunedAttention");
  s.max_positions = static_cast<int>(num(o, "maxPositions"));
  s.budget_bytes = static_cast<int64_t>(num(o, "budgetBytes"));
  s.embed = weight(o, "embed", "spec");
  s.lm_head = weight(o, "lmHead", "spec");
  s.final_norm = vec(o, "finalNorm");
  const Napi::Value lv = o.Get("layers");
  if (!lv.IsArray()) throw Napi::TypeError::New(o.Env(), "GpuModel spec: layers must be an array");
  Napi::Array layers = lv.As<Napi::Array>();
  for (uint32_t l = 0; l < layers.Length(); l++) {
    Napi::Object L = layers.Get(l).As<Napi::Object>();
    const std::string w = "layers[" + std::to_string(l) + "]";
    cuda::HostLayer h;
    h.input_norm = vec(L, "inputNorm");
    h.post_attention_norm = vec(L, "postAttentionNorm");
    h.has_q_lora = flag(L, "hasQLora");
    if (h.has_q_lora) {
      h.q_a = weight(L, "qA", w);
      h.q_b = weight(L, "qB", w);
      h.q_a_norm = vec(L, "qANorm");
    } else {
      h.q_proj = weight(L, "qProj", w);
    }
    h.kv_a = weight(L, "kvA", w);
    h.kv_a_norm = vec(L, "kvANorm");
    h.kv_b = weight(L, "kvB", w);
    h.o_proj = weight(L, "oProj", w);
    h.has_indexer = flag(L, "hasIndexer");
    if (h.has_indexer) {
      h.ix_wq_b = weight(L, "ixWqB", w);
      h.ix_wk = weight(L, "ixWk", w);
      h.ix_weights_proj = weight(L, "ixWeightsProj", w);
      h.ix_k_norm_weight = vec(L, "ixKNormWeight");
      h.ix_k_norm_bias = vec(L, "ixKNormBias");
    }
    h.is_moe = flag(L, "isMoe");
    if (h.is_moe) {
      h.router = weight(L, "router", w);
      h.router_bias = vec(L, "routerBias", true);
      Napi::Array ex = L.Get("experts").As<Napi::Array>();
      for (uint32_t e = 0; e < ex.Length(); e++) h.experts.push_back(mlp(ex.Get(e).As<Napi::Object>(), w + ".experts[" + std::to_string(e) + "]"));
      h.has_shared = flag(L, "hasShared");
      if (h.has_shared) h.shared = mlp(L.Get("shared").As<Napi::Object>(), w + ".shared");
    } else {
      h.dense = mlp(L.Get("dense").As<Napi::Object>(), w + ".dense");
    }
    s.layers.push_back(std::move(h));
  }
  return s;
}

// ---- classes ----------------------------------------------------------------------------------------------
class GpuSequenceWrap;

class GpuModelWrap : public Napi::ObjectWrap<GpuModelWrap> {
 public:
  // The GpuSequence constructor of each environment (the addon can be loaded by several worker threads).
  static Napi::Function seq_ctor(Napi::Env env);
  static void set_seq_ctor(Napi::Env env, Napi::Function f);
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "GpuModel",
                       {InstanceMethod("describe", &GpuModelWrap::Describe),
                        InstanceMethod("createSequence", &GpuModelWrap::CreateSequence),
                        InstanceMethod("dispose", &GpuModelWrap::Dispose),
                        InstanceAccessor("weightBytes", &GpuModelWrap::WeightBytes, nullptr),
                        InstanceAccessor("budgetBytes", &GpuModelWrap::BudgetBytes, nullptr),
                        InstanceAccessor("usedBytes", &GpuModelWrap::UsedBytes, nullptr),
                        InstanceAccessor("bytesPerToken", &GpuModelWrap::BytesPerToken, nullptr)});
  }

  explicit GpuModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GpuModelWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "GpuModel: expected a spec object");
    cuda::ModelSpec spec = parse_spec(info[0].As<Napi::Object>());
    vocab_ = spec.vocab;
    struct Ctx {
      Napi::Env env;
      Napi::Function fn;
    } ctx{env, info.Length() > 1 && info[1].IsFunction() ? info[1].As<Napi::Function>() : Napi::Function()};
    auto cb = [](void* p, int done, int total) {
      Ctx* c = static_cast<Ctx*>(p);
      if (!c->fn.IsEmpty()) c->fn.Call({Napi::Number::New(c->env, done), Napi::Number::New(c->env, total)});
    };
    guarded(env, [&]() {
      model_.reset(new cuda::GpuModel(spec, cb, &ctx));
      return 0;
    });
  }

  cuda::GpuModel& model(Napi::Env env) {
    if (!model_) throw Napi::Error::New(env, "GpuModel: disposed");
    return *model_;
  }

 private:
  Napi::Value Describe(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), model(info.Env()).describe()); }
  Napi::Value WeightBytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(model(info.Env()).weight_bytes())); }
  Napi::Value BudgetBytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(model(info.Env()).budget_bytes())); }
  Napi::Value UsedBytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(model(info.Env()).used_bytes())); }
  Napi::Value BytesPerToken(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(model(info.Env()).bytes_per_token())); }
  Napi::Value CreateSequence(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    model_.reset();
    return info.Env().Undefined();
  }
  std::shared_ptr<cuda::GpuModel> model_;
  int vocab_ = 0;
  friend class GpuSequenceWrap;
};
namespace {
std::mutex g_ctor_mutex;
std::unordered_map<napi_env, Napi::FunctionReference*>& ctor_map() {
  static auto* m = new std::unordered_map<napi_env, Napi::FunctionReference*>();
  return *m;
}
}  // namespace

Napi::Function GpuModelWrap::seq_ctor(Napi::Env env) {
  std::lock_guard<std::mutex> lock(g_ctor_mutex);
  auto it = ctor_map().find(static_cast<napi_env>(env));
  if (it == ctor_map().end()) throw Napi::Error::New(env, "GpuSequence: the addon's CUDA bindings are not registered in this thread");
  return it->second->Value();
}

void GpuModelWrap::set_seq_ctor(Napi::Env env, Napi::Function f) {
  auto* ref = new Napi::FunctionReference(Napi::Persistent(f));
  std::lock_guard<std::mutex> lock(g_ctor_mutex);
  ctor_map()[static_cast<napi_env>(env)] = ref;
  napi_add_env_cleanup_hook(
      env,
      [](void* arg) {
        std::lock_guard<std::mutex> lock(g_ctor_mutex);
        napi_env e = static_cast<napi_env>(arg);
        auto it = ctor_map().find(e);
        if (it != ctor_map().end()) {
          delete it->second;
          ctor_map().erase(it);
        }
      },
      static_cast<napi_env>(env));
}

class GpuSequenceWrap : public Napi::ObjectWrap<GpuSequenceWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "GpuSequence",
                       {InstanceMethod("forward", &GpuSequenceWrap::Forward),
                        InstanceMethod("stepSample", &GpuSequenceWrap::StepSample),
                        InstanceMethod("truncate", &GpuSequenceWrap::Truncate),
                        InstanceMethod("setUseGraph", &GpuSequenceWrap::SetUseGraph),
                        InstanceMethod("copyPrefixFrom", &GpuSequenceWrap::CopyPrefixFrom),
                        InstanceMethod("dispose", &GpuSequenceWrap::Dispose),
                        InstanceAccessor("length", &GpuSequenceWrap::Length, nullptr),
                        InstanceAccessor("capacity", &GpuSequenceWrap::Capacity, nullptr),
                        InstanceAccessor("graphsCaptured", &GpuSequenceWrap::Graphs, nullptr)});
  }
  // new GpuSequence(model, capacity): only through GpuModel.createSequence.
  explicit GpuSequenceWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GpuSequenceWrap>(info) {
    Napi::Env env = info.Env();
    GpuModelWrap* mw = GpuModelWrap::Unwrap(info[0].As<Napi::Object>());
    Args a(info, "createSequence", 2);
    const int cap = static_cast<int>(a.integer(1, "capacity", 1, INT32_MAX));
    model_ = mw->model_;
    if (!model_) throw Napi::Error::New(env, "GpuModel: disposed");
    model_ref_ = Napi::Persistent(info[0].As<Napi::Object>());
    guarded(env, [&]() {
      seq_.reset(new cuda::GpuSequence(*model_, cap));
      return 0;
    });
    vocab_ = 0;
  }
  void set_vocab(int v) { vocab_ = v; }

 private:
  cuda::GpuSequence& seq(Napi::Env env) {
    if (!seq_) throw Napi::Error::New(env, "GpuSequence: disposed");
    return *seq_;
  }
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Args a(info, "forward", 2);
    ArrayArg<int32_t> ids = a.i32(0, "ids");
    const bool all = a.boolean(1, "allLogits");
    const int n = static_cast<int>(ids.length);
    Napi::Float32Array out = Napi::Float32Array::New(info.Env(), static_cast<size_t>(all ? n : 1) * vocab_);
    guarded(info.Env(), [&]() {
      seq(info.Env()).forward(ids.data, n, all, out.Data());
      return 0;
    });
    return out;
  }
  Napi::Value StepSample(const Napi::CallbackInfo& info) {
    Args a(info, "stepSample", 4);
    const int id = static_cast<int>(a.integer(0, "id", INT32_MIN, INT32_MAX));
    const float temperature = static_cast<float>(a.number(1, "temperature"));
    const float u = static_cast<float>(a.number(2, "u"));
    const bool want = a.boolean(3, "wantLogits");
    Napi::Object r = Napi::Object::New(info.Env());
    Napi::Float32Array logits;
    if (want) logits = Napi::Float32Array::New(info.Env(), static_cast<size_t>(vocab_));
    const int tok = guarded(info.Env(), [&]() { return seq(info.Env()).step_sample(id, temperature, u, want ? logits.Data() : nullptr); });
    r.Set("token", Napi::Number::New(info.Env(), tok));
    if (want) r.Set("logits", logits);
    return r;
  }
  Napi::Value Truncate(const Napi::CallbackInfo& info) {
    Args a(info, "truncate", 1);
    const int n = static_cast<int>(a.integer(0, "length", 0, INT32_MAX));
    guarded(info.Env(), [&]() {
      seq(info.Env()).truncate(n);
      return 0;
    });
    return info.Env().Undefined();
  }
  Napi::Value CopyPrefixFrom(const Napi::CallbackInfo& info) {
    Args a(info, "copyPrefixFrom", 2);
    Napi::Env env = info.Env();
    if (!info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(seq_ctor_value(env)))
      throw Napi::TypeError::New(env, "copyPrefixFrom: source must be a GpuSequence");
    GpuSequenceWrap* src = Unwrap(info[0].As<Napi::Object>());
    const int n = static_cast<int>(a.integer(1, "length", 0, INT32_MAX));
    guarded(env, [&]() {
      seq(env).copy_prefix_from(src->seq(env), n);
      return 0;
    });
    return env.Undefined();
  }
  static Napi::Function seq_ctor_value(Napi::Env env) { return GpuModelWrap::seq_ctor(env); }
  Napi::Value SetUseGraph(const Napi::CallbackInfo& info) {
    Args a(info, "setUseGraph", 1);
    seq(info.Env()).set_use_graph(a.boolean(0, "on"));
    return info.Env().Undefined();
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    seq_.reset();
    return info.Env().Undefined();
  }
  Napi::Value Length(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), seq(info.Env()).length()); }
  Napi::Value Capacity(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), seq(info.Env()).capacity()); }
  Napi::Value Graphs(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), seq(info.Env()).graphs_captured()); }

  std::shared_ptr<cuda::GpuModel> model_;  // keeps the weights alive while the sequence lives
  Napi::ObjectReference model_ref_;
  std::unique_ptr<cuda::GpuSequence> seq_;
  int vocab_;
};

Napi::Value GpuModelWrap::CreateSequence(const Napi::CallbackInfo& info) {
  Args a(info, "createSequence", 1);
  const int64_t cap = a.integer(0, "capacity", 1, INT32_MAX);
  const int vocab = vocab_;
  Napi::Object seq = seq_ctor(info.Env()).New({Value(), Napi::Number::New(info.Env(), static_cast<double>(cap))});
  GpuSequenceWrap::Unwrap(seq)->set_vocab(vocab);
  return seq;
}

// ---- op-level bindings -------------------------------------------------------------------------------------
struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DevBuf(size_t n) : bytes(n) { GLANCE_CUDA_CHECK(cudaMalloc(&p, n ? n : 16)); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(p); }
};

template <class T>
std::unique_ptr<DevBuf> up(const ArrayArg<T>& a) {
  std::unique_ptr<DevBuf> b(new DevBuf(a.bytes()));
  if (a.bytes()) GLANCE_CUDA_CHECK(cudaMemcpy(b->p, a.data, a.bytes(), cudaMemcpyHostToDevice));
  return b;
}
template <class T>
void down(const ArrayArg<T>& a, const DevBuf& b) {
  GLANCE_CUDA_CHECK(cudaDeviceSynchronize());
  if (a.bytes()) GLANCE_CUDA_CHECK(cudaMemcpy(a.data, b.p, a.bytes(), cudaMemcpyDeviceToHost));
}

struct DevWeightBuf {
  std::unique_ptr<DevBuf> data, scale;
  cuda::DevWeight w;
};
DevWeightBuf up_weight(const Weight& w) {
  DevWeightBuf d;
  const size_t bytes = static_cast<size_t>(w.rows * w.cols) * dtype_size(w.dtype);
  d.data.reset(new DevBuf(bytes));
  GLANCE_CUDA_CHECK(cudaMemcpy(d.data->p, w.data, bytes, cudaMemcpyHostToDevice));
  d.w.data = d.data->as<uint8_t>();
  d.w.dtype = static_cast<int>(w.dtype);
  d.w.rows = static_cast<int>(w.rows);
  d.w.cols = static_cast<int>(w.cols);
  if (w.dtype == DType::F8_E4M3) {
    const size_t sb = static_cast<size_t>((w.rows + 127) / 128 * w.scale_cols) * 4;
    d.scale.reset(new DevBuf(sb));
    GLANCE_CUDA_CHECK(cudaMemcpy(d.scale->p, w.scale_inv, sb, cudaMemcpyHostToDevice));
    d.w.scale_inv = d.scale->as<float>();
    d.w.scale_cols = static_cast<int>(w.scale_cols);
  }
  return d;
}

// bf16 rows (round to nearest even) of fp32 host values: the latent cache format.
std::unique_ptr<DevBuf> up_bf16(const ArrayArg<float>& a) {
  std::vector<uint16_t> h(static_cast<size_t>(a.length));
  for (int64_t i = 0; i < a.length; i++) {
    uint32_t u;
    std::memcpy(&u, &a.data[i], 4);
    u += 0x7FFFu + ((u >> 16) & 1u);
    h[static_cast<size_t>(i)] = static_cast<uint16_t>(u >> 16);
  }
  std::unique_ptr<DevBuf> b(new DevBuf(h.size() * 2));
  GLANCE_CUDA_CHECK(cudaMemcpy(b->p, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
  return b;
}

using Fn = Napi::Value (*)(const Napi::CallbackInfo&);

// matmul(out, x, T, w, path: 'auto' | 'gemv' | 'gemm' (split bf16) | 'gemm-bf16')
Napi::Value OpMatmul(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.matmul", 5);
  auto out = a.f32(0, "out");
  auto x = a.f32(1, "x");
  const int T = static_cast<int>(a.integer(2, "T", 0, INT32_MAX));
  const Weight& w = NativeWeight::From(a, 3, "w");
  const std::string path = a.string(4, "path");
  a.expect_length(x, a.product({T, w.cols}, "T*cols"), shape_str("T*cols", {T, w.cols}));
  a.expect_length(out, a.product({T, w.rows}, "T*rows"), shape_str("T*rows", {T, w.rows}));
  auto dx = up(x);
  auto dout = up(out);
  DevWeightBuf dw = up_weight(w);
  const int ld = static_cast<int>(w.cols), lo = static_cast<int>(w.rows);
  if (path == "gemv") cuda::gemv(nullptr, dout->as<float>(), lo, dx->as<float>(), ld, T, dw.w, false);
  else if (path == "gemm") cuda::gemm(nullptr, dout->as<float>(), lo, dx->as<float>(), ld, T, dw.w, false);
  else if (path == "gemm-bf16")
    cuda::gemm(nullptr, dout->as<float>(), lo, dx->as<float>(), ld, T, dw.w, false, cuda::GemmPrecision::kBf16);
  else cuda::linear(nullptr, dout->as<float>(), lo, dx->as<float>(), ld, T, dw.w, false);
  down(out, *dout);
  return info.Env().Undefined();
}

// embedding(out, ids, w)
Napi::Value OpEmbedding(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.embedding", 3);
  auto out = a.f32(0, "out");
  auto ids = a.i32(1, "ids");
  const Weight& w = NativeWeight::From(a, 2, "w");
  for (int64_t i = 0; i < ids.length; i++)
    if (ids.data[i] < 0 || ids.data[i] >= w.rows) a.range_error("ids[" + std::to_string(i) + "] out of range");
  a.expect_length(out, a.product({ids.length, w.cols}, "n*cols"), shape_str("n*cols", {ids.length, w.cols}));
  auto dout = up(out);
  auto dids = up(ids);
  DevWeightBuf dw = up_weight(w);
  cuda::embedding(nullptr, dout->as<float>(), dids->as<int>(), static_cast<int>(ids.length), dw.w);
  down(out, *dout);
  return info.Env().Undefined();
}

// rmsNorm(out, x, T, dim, weight, eps) / layerNorm(out, x, T, dim, weight, bias, eps)
Napi::Value OpRmsNorm(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.rmsNorm", 6);
  auto out = a.f32(0, "out");
  auto x = a.f32(1, "x");
  const int T = static_cast<int>(a.integer(2, "T", 0, INT32_MAX));
  const int dim = static_cast<int>(a.integer(3, "dim", 1, INT32_MAX));
  auto w = a.f32(4, "weight");
  const float eps = static_cast<float>(a.number(5, "eps"));
  a.expect_length(x, a.product({T, dim}, "T*dim"), "T*dim");
  a.expect_length(out, a.product({T, dim}, "T*dim"), "T*dim");
  a.expect_length(w, dim, "dim");
  auto dx = up(x), dout = up(out), dw = up(w);
  cuda::rms_norm(nullptr, dout->as<float>(), dim, dx->as<float>(), dim, T, dim, dw->as<float>(), eps);
  down(out, *dout);
  return info.Env().Undefined();
}

Napi::Value OpLayerNorm(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.layerNorm", 7);
  auto out = a.f32(0, "out");
  auto x = a.f32(1, "x");
  const int T = static_cast<int>(a.integer(2, "T", 0, INT32_MAX));
  const int dim = static_cast<int>(a.integer(3, "dim", 1, INT32_MAX));
  auto w = a.f32(4, "weight");
  auto b = a.f32(5, "bias");
  const float eps = static_cast<float>(a.number(6, "eps"));
  a.expect_length(x, a.product({T, dim}, "T*dim"), "T*dim");
  a.expect_length(out, a.product({T, dim}, "T*dim"), "T*dim");
  a.expect_length(w, dim, "dim");
  a.expect_length(b, dim, "dim");
  auto dx = up(x), dout = up(out), dw = up(w), db = up(b);
  cuda::layer_norm(nullptr, dout->as<float>(), dim, dx->as<float>(), dim, T, dim, dw->as<float>(), db->as<float>(), eps);
  down(out, *dout);
  return info.Env().Undefined();
}

// rope(x, T, nHeads, headStride, offset, ropeDim, positions, invFreq, attentionFactor, interleaved)
Napi::Value OpRope(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.rope", 10);
  auto x = a.f32(0, "x");
  const int T = static_cast<int>(a.integer(1, "T", 0, INT32_MAX));
  const int nh = static_cast<int>(a.integer(2, "nHeads", 0, INT32_MAX));
  const int hs = static_cast<int>(a.integer(3, "headStride", 1, INT32_MAX));
  const int off = static_cast<int>(a.integer(4, "offset", 0, INT32_MAX));
  const int rd = static_cast<int>(a.integer(5, "ropeDim", 0, INT32_MAX));
  auto pos = a.i32(6, "positions");
  auto inv = a.f32(7, "invFreq");
  const float af = static_cast<float>(a.number(8, "attentionFactor"));
  const bool il = a.boolean(9, "interleaved");
  if (off + rd > hs) a.range_error("offset + ropeDim exceeds headStride");
  a.expect_length(x, a.product({T, nh, hs}, "T*nHeads*headStride"), "T*nHeads*headStride");
  a.expect_length(pos, T, "T");
  a.expect_length(inv, rd / 2, "ropeDim/2");
  auto dx = up(x), dp = up(pos), di = up(inv);
  cuda::rope(nullptr, dx->as<float>(), T, nh, hs, off, rd, dp->as<int>(), di->as<float>(), af, il);
  down(x, *dx);
  return info.Env().Undefined();
}

// siluMul(out, gate, up, n)
Napi::Value OpSiluMul(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.siluMul", 4);
  auto out = a.f32(0, "out");
  auto g = a.f32(1, "gate");
  auto u = a.f32(2, "up");
  const int64_t n = a.integer(3, "n", 0, INT32_MAX);
  a.expect_length(out, n, "n");
  a.expect_length(g, n, "n");
  a.expect_length(u, n, "n");
  auto dout = up(out), dg = up(g), du = up(u);
  cuda::silu_mul(nullptr, dout->as<float>(), dg->as<float>(), du->as<float>(), n);
  down(out, *dout);
  return info.Env().Undefined();
}

// The arguments mlaAbsorbQuery and mlaAbsorbQueryRope share: (out, outStride, q, qStride, T, H, nope, v).
struct AbsorbCall {
  ArrayArg<float> out, q;
  int os, qs, T, H, nope, v;
};

AbsorbCall absorb_call(const Args& a) {
  AbsorbCall c;
  c.out = a.f32(0, "out");
  c.os = static_cast<int>(a.integer(1, "outStride", 1, INT32_MAX));
  c.q = a.f32(2, "q");
  c.qs = static_cast<int>(a.integer(3, "qStride", 1, INT32_MAX));
  c.T = static_cast<int>(a.integer(4, "T", 0, INT32_MAX));
  c.H = static_cast<int>(a.integer(5, "H", 1, INT32_MAX));
  c.nope = static_cast<int>(a.integer(6, "nope", 0, INT32_MAX));
  c.v = static_cast<int>(a.integer(7, "v", 0, INT32_MAX));
  return c;
}

// kvB's shape, room for the absorbed columns plus `rope` in each out row and nope + rope in each q row, and the
// lengths of out and q.
void check_absorb(const Args& a, const AbsorbCall& c, const Weight& w, int rope) {
  if (w.rows != static_cast<int64_t>(c.H) * (c.nope + c.v)) a.range_error("kvB rows must be H*(nope+v)");
  if (c.os < w.cols + rope || c.qs < c.nope + rope) a.range_error("strides too small");
  a.expect_length(c.out, a.product({c.T, c.H, c.os}, "T*H*outStride"), "T*H*outStride");
  a.expect_length(c.q, a.product({c.T, c.H, c.qs}, "T*H*qStride"), "T*H*qStride");
}

// mlaAbsorbQuery(out, outStride, q, qStride, T, H, nope, v, kvB)
Napi::Value OpAbsorb(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.mlaAbsorbQuery", 9);
  const AbsorbCall c = absorb_call(a);
  const Weight& w = NativeWeight::From(a, 8, "kvB");
  check_absorb(a, c, w, 0);
  auto dout = up(c.out), dq = up(c.q);
  DevWeightBuf dw = up_weight(w);
  cuda::mla_absorb_query(nullptr, dout->as<float>(), c.os, dq->as<float>(), c.qs, c.T, c.H, c.nope, c.v, dw.w);
  down(c.out, *dout);
  return info.Env().Undefined();
}

// mlaExpandValue(out, o, T, H, nope, v, kvB)
Napi::Value OpExpand(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.mlaExpandValue", 7);
  auto out = a.f32(0, "out");
  auto o = a.f32(1, "o");
  const int T = static_cast<int>(a.integer(2, "T", 0, INT32_MAX));
  const int H = static_cast<int>(a.integer(3, "H", 1, INT32_MAX));
  const int nope = static_cast<int>(a.integer(4, "nope", 0, INT32_MAX));
  const int v = static_cast<int>(a.integer(5, "v", 0, INT32_MAX));
  const Weight& w = NativeWeight::From(a, 6, "kvB");
  if (w.rows != static_cast<int64_t>(H) * (nope + v)) a.range_error("kvB rows must be H*(nope+v)");
  a.expect_length(o, a.product({T, H, w.cols}, "T*H*kvLora"), "T*H*kvLora");
  a.expect_length(out, a.product({T, H, v}, "T*H*v"), "T*H*v");
  auto dout = up(out), dO = up(o);
  DevWeightBuf dw = up_weight(w);
  cuda::mla_expand_value(nullptr, dout->as<float>(), dO->as<float>(), T, H, static_cast<int>(w.cols), nope, v, dw.w);
  down(out, *dout);
  return info.Env().Undefined();
}

// mlaAttention(out, q, kv, S, T, H, kvLora, rope, scale, indices|null, k, positions): kv is rounded to bf16 (the
// GPU cache format); the CPU reference is given the same rounded rows by the test.
Napi::Value OpAttention(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.mlaAttention", 12);
  auto out = a.f32(0, "out");
  auto q = a.f32(1, "q");
  auto kv = a.f32(2, "kv");
  const int S = static_cast<int>(a.integer(3, "S", 0, INT32_MAX));
  const int T = static_cast<int>(a.integer(4, "T", 0, INT32_MAX));
  const int H = static_cast<int>(a.integer(5, "H", 1, INT32_MAX));
  const int L = static_cast<int>(a.integer(6, "kvLora", 1, INT32_MAX));
  const int R = static_cast<int>(a.integer(7, "rope", 0, INT32_MAX));
  const float scale = static_cast<float>(a.number(8, "scale"));
  const bool sparse = !a.is_null(9);
  const int k = static_cast<int>(a.integer(10, "k", 0, INT32_MAX));
  auto pos = a.i32(11, "positions");
  a.expect_length(out, a.product({T, H, L}, "T*H*kvLora"), "T*H*kvLora");
  a.expect_length(q, a.product({T, H, L + R}, "T*H*latent"), "T*H*latent");
  a.expect_min_length(kv, a.product({S, L + R}, "S*latent"), "S*latent");
  a.expect_length(pos, T, "T");
  for (int t = 0; t < T; t++)
    if (pos.data[t] < 0 || pos.data[t] >= S) a.range_error("positions[" + std::to_string(t) + "] outside [0, S)");
  std::unique_ptr<DevBuf> di;
  if (sparse) {
    auto idx = a.i32(9, "indices");
    a.expect_length(idx, a.product({T, k}, "T*k"), "T*k");
    for (int64_t i = 0; i < idx.length; i++)
      if (idx.data[i] >= S) a.range_error("indices hold a position ≥ S");
    di = up(idx);
  }
  auto dout = up(out), dq = up(q), dkv = up_bf16(kv), dp = up(pos);
  cuda::mla_attention_generic(nullptr, dout->as<float>(), dq->as<float>(), dkv->as<uint16_t>(), T, H, L, R, scale,
                      sparse ? di->as<int>() : nullptr, k, dp->as<int>());
  down(out, *dout);
  return info.Env().Undefined();
}

// indexerScores(out, q, weights, keys, T, S, Hi, D, positions)
Napi::Value OpIndexerScores(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.indexerScores", 9);
  auto out = a.f32(0, "out");
  auto q = a.f32(1, "q");
  auto w = a.f32(2, "weights");
  auto keys = a.f32(3, "keys");
  const int T = static_cast<int>(a.integer(4, "T", 0, INT32_MAX));
  const int S = static_cast<int>(a.integer(5, "S", 0, INT32_MAX));
  const int Hi = static_cast<int>(a.integer(6, "Hi", 1, INT32_MAX));
  const int D = static_cast<int>(a.integer(7, "D", 1, INT32_MAX));
  auto pos = a.i32(8, "positions");
  a.expect_length(out, a.product({T, S}, "T*S"), "T*S");
  a.expect_length(q, a.product({T, Hi, D}, "T*Hi*D"), "T*Hi*D");
  a.expect_length(w, a.product({T, Hi}, "T*Hi"), "T*Hi");
  a.expect_min_length(keys, a.product({S, D}, "S*D"), "S*D");
  a.expect_length(pos, T, "T");
  auto dout = up(out), dq = up(q), dw = up(w), dk = up(keys), dp = up(pos);
  cuda::indexer_scores_f32_generic(nullptr, dout->as<float>(), S, dq->as<float>(), dw->as<float>(), dk->as<float>(), T, S, Hi, D,
                           dp->as<int>());
  down(out, *dout);
  return info.Env().Undefined();
}

// indexerScoresFp8(out, q8, weights, keys8, keyScales, T, S, Hi, D, positions)
Napi::Value OpIndexerScoresFp8(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.indexerScoresFp8", 10);
  auto out = a.f32(0, "out");
  auto q = a.u8(1, "q");
  auto w = a.f32(2, "weights");
  auto keys = a.u8(3, "keys");
  auto ks = a.f32(4, "keyScales");
  const int T = static_cast<int>(a.integer(5, "T", 0, INT32_MAX));
  const int S = static_cast<int>(a.integer(6, "S", 0, INT32_MAX));
  const int Hi = static_cast<int>(a.integer(7, "Hi", 1, INT32_MAX));
  const int D = static_cast<int>(a.integer(8, "D", 1, INT32_MAX));
  auto pos = a.i32(9, "positions");
  a.expect_length(out, a.product({T, S}, "T*S"), "T*S");
  a.expect_length(q, a.product({T, Hi, D}, "T*Hi*D"), "T*Hi*D");
  a.expect_length(w, a.product({T, Hi}, "T*Hi"), "T*Hi");
  a.expect_min_length(keys, a.product({S, D}, "S*D"), "S*D");
  a.expect_min_length(ks, S, "S");
  a.expect_length(pos, T, "T");
  auto dout = up(out), dq = up(q), dw = up(w), dk = up(keys), dks = up(ks), dp = up(pos);
  cuda::indexer_scores_fp8_generic(nullptr, dout->as<float>(), S, dq->as<uint8_t>(), dw->as<float>(), dk->as<uint8_t>(),
                           dks->as<float>(), T, S, Hi, D, dp->as<int>());
  down(out, *dout);
  return info.Env().Undefined();
}

// hadamardQuantRows(out8, scales, x, N, D): hadamardRows then quantizeFp8Rows of the CPU contract, fused.
Napi::Value OpHadamardQuant(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.hadamardQuantRows", 5);
  auto out = a.u8(0, "out");
  auto sc = a.f32(1, "scales");
  auto x = a.f32(2, "x");
  const int N = static_cast<int>(a.integer(3, "N", 0, INT32_MAX));
  const int D = static_cast<int>(a.integer(4, "D", 1, 1024));
  a.expect_length(out, a.product({N, D}, "N*D"), "N*D");
  a.expect_length(x, a.product({N, D}, "N*D"), "N*D");
  a.expect_length(sc, N, "N");
  auto dout = up(out), dsc = up(sc), dx = up(x);
  cuda::hadamard_quant_rows(nullptr, dout->as<uint8_t>(), dsc->as<float>(), dx->as<float>(), N, D, nullptr, true);
  down(out, *dout);
  down(sc, *dsc);
  return info.Env().Undefined();
}

// topk_generic(idx, scores, T, S, k)
Napi::Value OpTopk(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.topk", 5);
  auto idx = a.i32(0, "idx");
  auto scores = a.f32(1, "scores");
  const int T = static_cast<int>(a.integer(2, "T", 0, INT32_MAX));
  const int S = static_cast<int>(a.integer(3, "S", 0, INT32_MAX));
  const int k = static_cast<int>(a.integer(4, "k", 1, INT32_MAX));
  a.expect_length(idx, a.product({T, k}, "T*k"), "T*k");
  a.expect_length(scores, a.product({T, S}, "T*S"), "T*S");
  auto di = up(idx), ds = up(scores);
  cuda::topk_generic(nullptr, di->as<int>(), ds->as<float>(), S, T, S, k, nullptr);
  down(idx, *di);
  return info.Env().Undefined();
}

// moeRoute(ids, weights, logits, T, E, K, opts) with the CPU's RouterOptions object.
Napi::Value OpMoeRoute(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.moeRoute", 7);
  auto ids = a.i32(0, "ids");
  auto w = a.f32(1, "weights");
  auto logits = a.f32(2, "logits");
  const int T = static_cast<int>(a.integer(3, "T", 0, INT32_MAX));
  const int E = static_cast<int>(a.integer(4, "E", 1, 512));
  const int K = static_cast<int>(a.integer(5, "K", 1, E));
  Napi::Object o = info[6].As<Napi::Object>();
  const std::string sc = o.Get("scoring").As<Napi::String>().Utf8Value();
  const std::string me = o.Get("method").As<Napi::String>().Utf8Value();
  const int scoring = sc == "softmax" ? 1 : 0;
  const int method = me == "greedy" ? 0 : me == "group_limited_greedy" ? 1 : 2;
  const int nGroup = o.Get("nGroup").As<Napi::Number>().Int32Value();
  const int topkGroup = o.Get("topkGroup").As<Napi::Number>().Int32Value();
  const bool norm = o.Get("normTopk").As<Napi::Boolean>().Value();
  const float scale = o.Get("scale").As<Napi::Number>().FloatValue();
  std::unique_ptr<DevBuf> dbias;
  const Napi::Value bv = o.Get("bias");
  if (bv.IsTypedArray()) {
    Napi::Float32Array b = bv.As<Napi::Float32Array>();
    ArrayArg<float> ba{b.Data(), static_cast<int64_t>(b.ElementLength()), "bias"};
    dbias = up(ba);
  }
  a.expect_length(logits, a.product({T, E}, "T*E"), "T*E");
  a.expect_length(ids, a.product({T, K}, "T*K"), "T*K");
  a.expect_length(w, a.product({T, K}, "T*K"), "T*K");
  auto di = up(ids), dw = up(w), dl = up(logits);
  cuda::moe_route(nullptr, di->as<int>(), dw->as<float>(), dl->as<float>(), T, E, K, scoring, method, nGroup, topkGroup,
                  dbias ? dbias->as<float>() : nullptr, norm, scale);
  down(ids, *di);
  down(w, *dw);
  return info.Env().Undefined();
}

// moeExperts(out, x, T, ids, weights, gate[], up[], down[], path: 'gemv' | 'gemv-swiglu' | 'gemm'):
// out[t] = Σ_j weights[t,j] · down_e(silu(gate_e x_t) · up_e x_t), e = ids[t,j] (routed part of the MoE block).
Napi::Value OpMoeExperts(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.moeExperts", 9);
  auto out = a.f32(0, "out");
  auto x = a.f32(1, "x");
  const int T = static_cast<int>(a.integer(2, "T", 1, INT32_MAX));
  auto ids = a.i32(3, "ids");
  auto wts = a.f32(4, "weights");
  Napi::Array ga = info[5].As<Napi::Array>(), ua = info[6].As<Napi::Array>(), da = info[7].As<Napi::Array>();
  const std::string path = a.string(8, "path");
  const int E = static_cast<int>(ga.Length());
  const int K = static_cast<int>(ids.length / T);
  std::vector<DevWeightBuf> bufs;
  std::vector<cuda::DevWeight> gt, ut, dt;
  for (int e = 0; e < E; e++) {
    bufs.push_back(up_weight(NativeWeight::FromValue(info.Env(), ga.Get(e), "gate")));
    gt.push_back(bufs.back().w);
    bufs.push_back(up_weight(NativeWeight::FromValue(info.Env(), ua.Get(e), "up")));
    ut.push_back(bufs.back().w);
    bufs.push_back(up_weight(NativeWeight::FromValue(info.Env(), da.Get(e), "down")));
    dt.push_back(bufs.back().w);
  }
  const int D = gt[0].cols, I = gt[0].rows;
  a.expect_length(x, a.product({T, D}, "T*D"), "T*D");
  a.expect_length(out, a.product({T, D}, "T*D"), "T*D");
  a.expect_length(wts, ids.length, "T*K");
  for (int64_t i = 0; i < ids.length; i++)
    if (ids.data[i] < 0 || ids.data[i] >= E) a.range_error("ids out of range");
  auto table = [&](const std::vector<cuda::DevWeight>& t) {
    std::unique_ptr<DevBuf> b(new DevBuf(t.size() * sizeof(cuda::DevWeight)));
    GLANCE_CUDA_CHECK(cudaMemcpy(b->p, t.data(), b->bytes, cudaMemcpyHostToDevice));
    return b;
  };
  auto tg = table(gt), tu = table(ut), td = table(dt);
  auto dout = up(out), dx = up(x), di = up(ids), dw = up(wts);
  DevBuf g(static_cast<size_t>(T) * K * I * 4), u(static_cast<size_t>(T) * K * I * 4), y(static_cast<size_t>(T) * K * D * 4);
  DevBuf counts((E + 1) * 4), rows(static_cast<size_t>(T) * K * 4), pos(static_cast<size_t>(T) * K * 4),
      tiles((static_cast<size_t>(T) * K / cuda::kGemmTileM + E + 1) * 16), nt(4);
  const int slots = T * K;
  const int* slot_pos = nullptr;
  if (path == "decode-fused") {
    // the decode MoE launches: grouped SwiGLU GEMV batch, then down projections + weighted combine into out (+=)
    if (T != 1) a.range_error("path decode-fused takes one token");
    cuda::GemvBatch b;
    b.x = dx->as<float>();
    b.ldx = D;
    b.M = 1;
    b.njobs = 1;
    cuda::GemvJob& j = b.jobs[0];
    j.w = gt[0];
    j.table = tg->as<cuda::DevWeight>();
    j.up_table = tu->as<cuda::DevWeight>();
    j.ids = di->as<int>();
    j.slots = K;
    j.x_div = K;
    j.out = g.as<float>();
    j.ldo = I;
    cuda::gemv_batch(nullptr, b);
    GLANCE_CUDA_CHECK(cudaMemset(dout->p, 0, dout->bytes));
    cuda::MoeDownParams d;
    d.out = dout->as<float>();
    d.ldo = D;
    d.g = g.as<float>();
    d.ldg = I;
    d.ids = di->as<int>();
    d.wts = dw->as<float>();
    d.table = td->as<cuda::DevWeight>();
    d.shape = dt[0];
    d.K = K;
    cuda::moe_down_combine(nullptr, d, 1);
    down(out, *dout);
    return info.Env().Undefined();
  }
  if (path == "gemv-swiglu") {
    cuda::grouped_gemv_swiglu(nullptr, g.as<float>(), I, dx->as<float>(), D, K, slots, tg->as<cuda::DevWeight>(),
                              tu->as<cuda::DevWeight>(), di->as<int>(), gt[0]);
    cuda::grouped_gemv(nullptr, y.as<float>(), D, g.as<float>(), I, 1, slots, td->as<cuda::DevWeight>(), di->as<int>(), dt[0]);
  } else if (path == "gemv") {
    cuda::grouped_gemv(nullptr, g.as<float>(), I, dx->as<float>(), D, K, slots, tg->as<cuda::DevWeight>(), di->as<int>(), gt[0]);
    cuda::grouped_gemv(nullptr, u.as<float>(), I, dx->as<float>(), D, K, slots, tu->as<cuda::DevWeight>(), di->as<int>(), ut[0]);
    cuda::silu_mul(nullptr, g.as<float>(), g.as<float>(), u.as<float>(), static_cast<int64_t>(slots) * I);
    cuda::grouped_gemv(nullptr, y.as<float>(), D, g.as<float>(), I, 1, slots, td->as<cuda::DevWeight>(), di->as<int>(), dt[0]);
  } else {
    const int mt = cuda::moe_permute(nullptr, di->as<int>(), T, K, E, counts.as<int>(), rows.as<int>(), pos.as<int>(),
                                     tiles.as<int4>(), nt.as<int>());
    cuda::grouped_gemm(nullptr, g.as<float>(), I, dx->as<float>(), D, rows.as<int>(), tg->as<cuda::DevWeight>(),
                       tiles.as<int4>(), nt.as<int>(), mt, gt[0]);
    cuda::grouped_gemm(nullptr, u.as<float>(), I, dx->as<float>(), D, rows.as<int>(), tu->as<cuda::DevWeight>(),
                       tiles.as<int4>(), nt.as<int>(), mt, ut[0]);
    cuda::silu_mul(nullptr, g.as<float>(), g.as<float>(), u.as<float>(), static_cast<int64_t>(slots) * I);
    cuda::grouped_gemm(nullptr, y.as<float>(), D, g.as<float>(), I, nullptr, td->as<cuda::DevWeight>(), tiles.as<int4>(),
                       nt.as<int>(), mt, dt[0]);
    slot_pos = pos.as<int>();
  }
  cuda::moe_combine(nullptr, dout->as<float>(), y.as<float>(), dw->as<float>(), slot_pos, T, K, D, false);
  down(out, *dout);
  return info.Env().Undefined();
}

// gemvBatch(x, T, normWeight | null, eps, jobs: {w, up?, out}[]): one launch of up to 4 GEMVs over the same rows
// x [T ≤ 8, cols], RMS-normalised by normWeight (null: as they are); out = x̂·wᵀ, or silu(x̂·wᵀ) · (x̂·upᵀ).
Napi::Value OpGemvBatch(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.gemvBatch", 5);
  auto x = a.f32(0, "x");
  const int T = static_cast<int>(a.integer(1, "T", 1, cuda::kGemvMaxM));
  const float eps = static_cast<float>(a.number(3, "eps"));
  if (!info[4].IsArray()) a.type_error("jobs must be an array");
  Napi::Array jobs = info[4].As<Napi::Array>();
  const int n = static_cast<int>(jobs.Length());
  if (n < 1 || n > cuda::kGemvBatchJobs) a.range_error("1..4 jobs");
  std::vector<DevWeightBuf> bufs;
  std::vector<std::unique_ptr<DevBuf>> outs;
  std::vector<ArrayArg<float>> host_outs;
  cuda::GemvBatch b;
  b.M = T;
  b.eps = eps;
  b.njobs = n;
  int cols = -1;
  for (int i = 0; i < n; i++) {
    Napi::Object o = jobs.Get(i).As<Napi::Object>();
    bufs.push_back(up_weight(NativeWeight::FromValue(info.Env(), o.Get("w"), "w")));
    cuda::GemvJob& j = b.jobs[i];
    j.w = bufs.back().w;
    if (cols >= 0 && j.w.cols != cols) a.range_error("jobs must share cols");
    cols = j.w.cols;
    if (o.Has("up") && !o.Get("up").IsUndefined() && !o.Get("up").IsNull()) {
      bufs.push_back(up_weight(NativeWeight::FromValue(info.Env(), o.Get("up"), "up")));
      j.up = bufs.back().w;
    }
    Napi::Float32Array oa = o.Get("out").As<Napi::Float32Array>();
    host_outs.push_back(ArrayArg<float>{oa.Data(), static_cast<int64_t>(oa.ElementLength()), "out"});
    a.expect_length(host_outs.back(), a.product({T, j.w.rows}, "T*rows"), "T*rows");
    outs.push_back(up(host_outs.back()));
    j.out = outs.back()->as<float>();
    j.ldo = j.w.rows;
  }
  a.expect_length(x, a.product({T, cols}, "T*cols"), "T*cols");
  auto dx = up(x);
  b.x = dx->as<float>();
  b.ldx = cols;
  std::unique_ptr<DevBuf> dn;
  if (!info[2].IsNull() && !info[2].IsUndefined()) {
    auto nw = a.f32(2, "normWeight");
    a.expect_length(nw, cols, "cols");
    dn = up(nw);
    b.norm_w = dn->as<float>();
    b.norm_dim = cols;
  }
  cuda::gemv_batch(nullptr, b);
  for (int i = 0; i < n; i++) down(host_outs[static_cast<size_t>(i)], *outs[static_cast<size_t>(i)]);
  return info.Env().Undefined();
}

// mlaAbsorbQueryRope(out, outStride, q, qStride, T, H, nope, v, rope, kvB, positions, invFreq, attentionFactor):
// absorption plus the interleaved RoPE of q's rope part, written after the absorbed columns (the decode kernel).
Napi::Value OpAbsorbRope(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.mlaAbsorbQueryRope", 13);
  const AbsorbCall c = absorb_call(a);
  const int rope = static_cast<int>(a.integer(8, "rope", 0, 256));
  const Weight& w = NativeWeight::From(a, 9, "kvB");
  auto pos = a.i32(10, "positions");
  auto inv = a.f32(11, "invFreq");
  const float af = static_cast<float>(a.number(12, "attentionFactor"));
  check_absorb(a, c, w, rope);
  a.expect_length(pos, c.T, "T");
  a.expect_length(inv, rope / 2, "rope/2");
  auto dout = up(c.out), dq = up(c.q), dp = up(pos), di = up(inv);
  DevWeightBuf dw = up_weight(w);
  cuda::mla_absorb_query_rope(nullptr, dout->as<float>(), c.os, dq->as<float>(), c.qs, c.T, c.H, c.nope, c.v, rope, dw.w,
                              dp->as<int>(), di->as<float>(), af);
  down(c.out, *dout);
  return info.Env().Undefined();
}

// swiglu(out, x, T, gate, up): out = silu(x·gateᵀ) · (x·upᵀ), the fused decode GEMV.
Napi::Value OpSwiglu(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.swiglu", 5);
  auto out = a.f32(0, "out");
  auto x = a.f32(1, "x");
  const int T = static_cast<int>(a.integer(2, "T", 0, 8));
  const Weight& gw = NativeWeight::From(a, 3, "gate");
  const Weight& uw = NativeWeight::From(a, 4, "up");
  a.expect_length(x, a.product({T, gw.cols}, "T*cols"), "T*cols");
  a.expect_length(out, a.product({T, gw.rows}, "T*rows"), "T*rows");
  auto dx = up(x), dout = up(out);
  DevWeightBuf dg = up_weight(gw), du = up_weight(uw);
  cuda::gemv_swiglu(nullptr, dout->as<float>(), static_cast<int>(gw.rows), dx->as<float>(), static_cast<int>(gw.cols), T, dg.w, du.w);
  down(out, *dout);
  return info.Env().Undefined();
}

// sample(logits, temperature, u) → token
Napi::Value OpSample(const Napi::CallbackInfo& info) {
  Args a(info, "cuda.modelOps.sample", 3);
  auto logits = a.f32(0, "logits");
  const float temp = static_cast<float>(a.number(1, "temperature"));
  const float uval = static_cast<float>(a.number(2, "u"));
  ArrayArg<float> ua{const_cast<float*>(&uval), 1, "u"};
  auto dl = up(logits), du = up(ua);
  DevBuf tok(4);
  cuda::sample(nullptr, tok.as<int>(), dl->as<float>(), static_cast<int>(logits.length), temp, du->as<float>());
  int t = -1;
  GLANCE_CUDA_CHECK(cudaDeviceSynchronize());
  GLANCE_CUDA_CHECK(cudaMemcpy(&t, tok.p, 4, cudaMemcpyDeviceToHost));
  return Napi::Number::New(info.Env(), t);
}

template <Fn F>
Napi::Value Guard(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() { return F(info); });
}

}  // namespace

void register_cuda_model_ops(Napi::Env env, Napi::Object cuda) {
  Napi::Function model = GpuModelWrap::Define(env);
  Napi::Function seq = GpuSequenceWrap::Define(env);
  GpuModelWrap::set_seq_ctor(env, seq);
  cuda.Set("GpuModel", model);
  Napi::Object ops = Napi::Object::New(env);
  struct Op {
    const char* name;
    Fn fn;
  };
  const Op list[] = {
      {"matmul", Guard<OpMatmul>},
      {"embedding", Guard<OpEmbedding>},
      {"rmsNorm", Guard<OpRmsNorm>},
      {"layerNorm", Guard<OpLayerNorm>},
      {"rope", Guard<OpRope>},
      {"siluMul", Guard<OpSiluMul>},
      {"mlaAbsorbQuery", Guard<OpAbsorb>},
      {"mlaExpandValue", Guard<OpExpand>},
      {"mlaAttention", Guard<OpAttention>},
      {"indexerScores", Guard<OpIndexerScores>},
      {"indexerScoresFp8", Guard<OpIndexerScoresFp8>},
      {"hadamardQuantRows", Guard<OpHadamardQuant>},
      {"topk", Guard<OpTopk>},
      {"moeRoute", Guard<OpMoeRoute>},
      {"moeExperts", Guard<OpMoeExperts>},
      {"sample", Guard<OpSample>},
      {"swiglu", Guard<OpSwiglu>},
      {"gemvBatch", Guard<OpGemvBatch>},
      {"mlaAbsorbQueryRope", Guard<OpAbsorbRope>},
  };
  for (const Op& o : list) ops.Set(o.name, Napi::Function::New(env, o.fn, o.name));
  cuda.Set("modelOps", ops);
}

}  // namespace binding
}  // namespace glance
