// The N-API surface of the native addon (sidecar/src/native/contract.ts, interface NativeAddon): argument
// checking and calls into the CPU kernels (kernels/cpu). Nothing here computes.
#include <napi.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <string>

#include "../cpu/cache_memory.h"
#include "../cpu/kernels.h"
#include "../cpu/mapped_file.h"
#include "../cpu/simd.h"
#include "../cpu/thread_pool.h"
#include "addon_data.h"
#include "args.h"
#include "cuda.h"
#include "weight.h"

#ifndef GLANCE_VERSION
#define GLANCE_VERSION "0.0.0"
#endif

namespace glance {
namespace binding {

namespace {

constexpr int64_t kMaxDim = INT32_MAX;

// ---- runtime ---------------------------------------------------------------------------------------------

Napi::Value Backends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("threads", Napi::Number::New(env, pool_threads()));
  cpu.Set("simd", Napi::String::New(env, simd_name()));
  // attention over a bf16 latent cache with AVX-512-BF16 dot products (bf16-rounded q and probabilities)
  cpu.Set("bf16Dot", Napi::Boolean::New(env, use_avx512_bf16()));
  // AMX tiles for the FP8 indexer (up to 16 heads, D = 64 or 128) and the attention over a bf16 cache
  cpu.Set("amx", Napi::Boolean::New(env, use_amx_bf16()));
  Napi::Object cuda = cuda_backend_summary(env);
  Napi::Object r = Napi::Object::New(env);
  r.Set("cpu", cpu);
  r.Set("cuda", cuda);
  return r;
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Args a(info, "setThreads", 1);
  pool_set_threads(static_cast<int>(a.integer(0, "n", 1, 256)));
  return info.Env().Undefined();
}

Napi::Value MeasureReadBandwidth(const Napi::CallbackInfo& info) {
  Args a(info, "measureReadBandwidth", 1);
  const double mb = a.number(0, "megabytes");
  if (mb <= 0 || mb > 4096) a.range_error("megabytes must be in (0, 4096], got " + std::to_string(mb));
  const double gbs = measure_read_bandwidth(static_cast<int64_t>(mb * 1048576.0));
  if (gbs <= 0) throw Napi::Error::New(info.Env(), "measureReadBandwidth: could not allocate the buffers");
  return Napi::Number::New(info.Env(), gbs);
}

// ---- files and weights -----------------------------------------------------------------------------------

Napi::Value MapFile(const Napi::CallbackInfo& info) {
  Args a(info, "mapFile", 1);
  const std::string path = a.string(0, "path");
  MappedFile m = map_file(path);
  Napi::Env env = info.Env();
  if (m.error != 0) {
    const char* code = errno_name(m.error);
    std::string msg = "mapFile: cannot map '" + path + "': " + std::strerror(m.error);
    if (*code) msg += std::string(" (") + code + ", " + m.what + ")";
    Napi::Error e = Napi::Error::New(env, msg);
    if (*code) e.Set("code", Napi::String::New(env, code));
    e.Set("path", Napi::String::New(env, path));
    throw e;
  }
  if (m.size == 0) return Napi::ArrayBuffer::New(env, 0);
  return Napi::ArrayBuffer::New(
      env, m.data, m.size, [](Napi::Env, void* data, size_t* size) {
        unmap_file(data, *size);
        delete size;
      },
      new size_t(m.size));
}

Napi::Value AllocCacheBuffer(const Napi::CallbackInfo& info) {
  Args a(info, "allocCacheBuffer", 1);
  const int64_t bytes = a.integer(0, "bytes", 0, int64_t{1} << 40);
  Napi::Env env = info.Env();
  if (bytes == 0) return Napi::ArrayBuffer::New(env, 0);
  const CacheMemory m = alloc_cache_memory(static_cast<size_t>(bytes));
  if (m.data == nullptr) return Napi::ArrayBuffer::New(env, static_cast<size_t>(bytes));  // V8's zeroed memory
  return Napi::ArrayBuffer::New(
      env, m.data, m.size, [](Napi::Env, void* data, size_t* mapped) {
        free_cache_memory(data, *mapped);
        delete mapped;
      },
      new size_t(m.mapped));
}

Napi::Value CreateWeight(const Napi::CallbackInfo& info) {
  AddonData* d = info.Env().GetInstanceData<AddonData>();
  std::vector<napi_value> argv;
  for (size_t i = 0; i < info.Length(); i++) argv.push_back(info[i]);
  return d->weight_ctor.New(argv);
}

Napi::Value ToFloat32(const Napi::CallbackInfo& info) {
  Args a(info, "toFloat32", 1);
  const Weight& w = NativeWeight::From(a, 0, "w");
  const int64_t n = a.product({w.rows, w.cols}, "rows*cols");
  Napi::Float32Array out = Napi::Float32Array::New(info.Env(), static_cast<size_t>(n));
  to_float32(out.Data(), w);
  return out;
}

// ---- linear algebra --------------------------------------------------------------------------------------

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Args a(info, "matmul", 4);
  auto out = a.f32(0, "out");
  auto x = a.f32(1, "x");
  const int64_t T = a.integer(2, "T", 0, kMaxDim);
  const Weight& w = NativeWeight::From(a, 3, "w");
  a.expect_length(x, a.product({T, w.cols}, "T*cols"), shape_str("T*cols", {T, w.cols}));
  a.expect_length(out, a.product({T, w.rows}, "T*rows"), shape_str("T*rows", {T, w.rows}));
  a.expect_disjoint(out, x);
  matmul(out.data, x.data, T, w);
  return info.Env().Undefined();
}

Napi::Value Embedding(const Napi::CallbackInfo& info) {
  Args a(info, "embedding", 3);
  auto out = a.f32(0, "out");
  auto ids = a.i32(1, "ids");
  const Weight& w = NativeWeight::From(a, 2, "w");
  a.expect_length(out, a.product({ids.length, w.cols}, "ids.length*cols"), shape_str("ids.length*cols", {ids.length, w.cols}));
  for (int64_t i = 0; i < ids.length; i++)
    if (ids.data[i] < 0 || ids.data[i] >= w.rows)
      a.range_error("ids[" + std::to_string(i) + "] = " + std::to_string(ids.data[i]) + " is out of range [0, " +
                    std::to_string(w.rows) + ")");
  embedding(out.data, ids.data, ids.length, w);
  return info.Env().Undefined();
}

Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  Args a(info, "rmsNorm", 6);
  auto out = a.f32(0, "out");
  auto x = a.f32(1, "x");
  const int64_t T = a.integer(2, "T", 0, kMaxDim);
  const int64_t dim = a.integer(3, "dim", 0, kMaxDim);
  auto weight = a.f32(4, "weight");
  const double eps = a.number(5, "eps");
  const int64_t n = a.product({T, dim}, "T*dim");
  a.expect_length(x, n, shape_str("T*dim", {T, dim}));
  a.expect_length(out, n, shape_str("T*dim", {T, dim}));
  a.expect_length(weight, dim, shape_str("dim", {dim}));
  a.expect_disjoint(out, x, true);
  a.expect_disjoint(out, weight);
  rms_norm(out.data, x.data, T, dim, weight.data, static_cast<float>(eps));
  return info.Env().Undefined();
}

Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  Args a(info, "layerNorm", 7);
  auto out = a.f32(0, "out");
  auto x = a.f32(1, "x");
  const int64_t T = a.integer(2, "T", 0, kMaxDim);
  const int64_t dim = a.integer(3, "dim", 0, kMaxDim);
  auto weight = a.f32(4, "weight");
  auto bias = a.f32(5, "bias");
  const double eps = a.number(6, "eps");
  const int64_t n = a.product({T, dim}, "T*dim");
  a.expect_length(x, n, shape_str("T*dim", {T, dim}));
  a.expect_length(out, n, shape_str("T*dim", {T, dim}));
  a.expect_length(weight, dim, shape_str("dim", {dim}));
  a.expect_length(bias, dim, shape_str("dim", {dim}));
  a.expect_disjoint(out, x, true);
  a.expect_disjoint(out, weight);
  a.expect_disjoint(out, bias);
  layer_norm(out.data, x.data, T, dim, weight.data, bias.data, static_cast<float>(eps));
  return info.Env().Undefined();
}

Napi::Value Rope(const Napi::CallbackInfo& info) {
  Args a(info, "rope", 10);
  auto x = a.f32(0, "x");
  const int64_t T = a.integer(1, "T", 0, kMaxDim);
  const int64_t nHeads = a.integer(2, "nHeads", 0, kMaxDim);
  const int64_t headStride = a.integer(3, "headStride", 0, kMaxDim);
  const int64_t offset = a.integer(4, "offset", 0, kMaxDim);
  const int64_t ropeDim = a.integer(5, "ropeDim", 0, kMaxDim);
  auto positions = a.i32(6, "positions");
  auto invFreq = a.f32(7, "invFreq");
  const double af = a.number(8, "attentionFactor");
  const bool interleaved = a.boolean(9, "interleaved");
  if (ropeDim % 2 != 0) a.range_error("ropeDim must be even, got " + std::to_string(ropeDim));
  if (offset + ropeDim > headStride)
    a.range_error("offset + ropeDim = " + std::to_string(offset + ropeDim) + " exceeds headStride = " +
                  std::to_string(headStride));
  a.expect_length(x, a.product({T, nHeads, headStride}, "T*nHeads*headStride"),
                  shape_str("T*nHeads*headStride", {T, nHeads, headStride}));
  a.expect_length(positions, T, shape_str("T", {T}));
  a.expect_length(invFreq, ropeDim / 2, shape_str("ropeDim/2", {ropeDim / 2}));
  a.expect_disjoint(x, invFreq);
  rope(x.data, T, nHeads, headStride, offset, ropeDim, positions.data, invFreq.data, static_cast<float>(af), interleaved);
  return info.Env().Undefined();
}

// ---- MLA -------------------------------------------------------------------------------------------------

void expect_kvb(const Args& a, const Weight& w, int64_t H, int64_t nope, int64_t v) {
  const int64_t rows = a.product({H, nope + v}, "H*(nope+v)");
  if (w.rows != rows)
    a.range_error("kvB has " + std::to_string(w.rows) + " rows, expected H*(nope+v) = " + std::to_string(H) + "*" +
                  std::to_string(nope + v) + " = " + std::to_string(rows));
}

Napi::Value MlaAbsorbQuery(const Napi::CallbackInfo& info) {
  Args a(info, "mlaAbsorbQuery", 9);
  auto out = a.f32(0, "out");
  const int64_t outStride = a.integer(1, "outStride", 0, kMaxDim);
  auto q = a.f32(2, "q");
  const int64_t qStride = a.integer(3, "qStride", 0, kMaxDim);
  const int64_t T = a.integer(4, "T", 0, kMaxDim);
  const int64_t H = a.integer(5, "H", 0, kMaxDim);
  const int64_t nope = a.integer(6, "nope", 0, kMaxDim);
  const int64_t v = a.integer(7, "v", 0, kMaxDim);
  const Weight& w = NativeWeight::From(a, 8, "kvB");
  expect_kvb(a, w, H, nope, v);
  if (qStride < nope) a.range_error("qStride = " + std::to_string(qStride) + " is less than nope = " + std::to_string(nope));
  if (outStride < w.cols)
    a.range_error("outStride = " + std::to_string(outStride) + " is less than kvLora = kvB.cols = " + std::to_string(w.cols));
  a.expect_length(q, a.product({T, H, qStride}, "T*H*qStride"), shape_str("T*H*qStride", {T, H, qStride}));
  a.expect_length(out, a.product({T, H, outStride}, "T*H*outStride"), shape_str("T*H*outStride", {T, H, outStride}));
  a.expect_disjoint(out, q);
  mla_absorb_query(out.data, outStride, q.data, qStride, T, H, nope, v, w);
  return info.Env().Undefined();
}

Napi::Value MlaExpandValue(const Napi::CallbackInfo& info) {
  Args a(info, "mlaExpandValue", 7);
  auto out = a.f32(0, "out");
  auto o = a.f32(1, "o");
  const int64_t T = a.integer(2, "T", 0, kMaxDim);
  const int64_t H = a.integer(3, "H", 0, kMaxDim);
  const int64_t nope = a.integer(4, "nope", 0, kMaxDim);
  const int64_t v = a.integer(5, "v", 0, kMaxDim);
  const Weight& w = NativeWeight::From(a, 6, "kvB");
  expect_kvb(a, w, H, nope, v);
  a.expect_length(o, a.product({T, H, w.cols}, "T*H*kvLora"), shape_str("T*H*kvLora", {T, H, w.cols}));
  a.expect_length(out, a.product({T, H, v}, "T*H*v"), shape_str("T*H*v", {T, H, v}));
  a.expect_disjoint(out, o);
  mla_expand_value(out.data, o.data, T, H, nope, v, w);
  return info.Env().Undefined();
}

// kvLora must have an FP8 latent row form (tiles of 128 or 64 columns).
void expect_fp8_kv_lora(const Args& a, int64_t L) {
  if (L % 64 != 0)
    a.range_error("kvLora = " + std::to_string(L) +
                  " has no FP8 latent cache form: the per-tile exponents need kvLora to be a multiple of 64");
}

Napi::Value MlaAttention(const Napi::CallbackInfo& info) {
  Args a(info, "mlaAttention", 12);
  auto out = a.f32(0, "out");
  auto q = a.f32(1, "q");
  // kv: the latent cache, fp32 (Float32Array), bf16 bit patterns (Uint16Array) or FP8 rows (Uint8Array, kernels.h)
  enum class Cache { F32, Bf16, Fp8 } cache;
  ArrayArg<float> kv32;
  ArrayArg<uint16_t> kv16;
  ArrayArg<uint8_t> kv8;
  if (a.is_u16(2)) {
    cache = Cache::Bf16;
    kv16 = a.u16(2, "kv");
  } else if (a.is_u8(2)) {
    cache = Cache::Fp8;
    kv8 = a.u8(2, "kv");
  } else if (a.is_f32(2)) {
    cache = Cache::F32;
    kv32 = a.f32(2, "kv");
  } else {
    a.type_error("kv must be a Float32Array, a Uint16Array (bf16) or a Uint8Array (FP8 latent rows)");
  }
  const int64_t S = a.integer(3, "S", 0, kMaxDim);
  const int64_t T = a.integer(4, "T", 0, kMaxDim);
  const int64_t H = a.integer(5, "H", 0, kMaxDim);
  const int64_t L = a.integer(6, "kvLora", 0, kMaxDim);
  const int64_t R = a.integer(7, "rope", 0, kMaxDim);
  const double scale = a.number(8, "scale");
  const bool sparse = !a.is_null(9);
  ArrayArg<int32_t> indices;
  if (sparse) indices = a.i32(9, "indices");
  const int64_t k = a.integer(10, "k", 0, kMaxDim);
  auto positions = a.i32(11, "positions");
  const int64_t D = L + R;
  a.expect_length(q, a.product({T, H, D}, "T*H*(kvLora+rope)"), shape_str("T*H*(kvLora+rope)", {T, H, D}));
  if (cache == Cache::Bf16) a.expect_min_length(kv16, a.product({S, D}, "S*(kvLora+rope)"), shape_str("S*(kvLora+rope)", {S, D}));
  else if (cache == Cache::F32) a.expect_min_length(kv32, a.product({S, D}, "S*(kvLora+rope)"), shape_str("S*(kvLora+rope)", {S, D}));
  else {
    expect_fp8_kv_lora(a, L);
    const int64_t rb = latent_fp8_row_bytes(L, R);
    a.expect_min_length(kv8, a.product({S, rb}, "S*rowBytes"), shape_str("S*rowBytes", {S, rb}));
    if (reinterpret_cast<uintptr_t>(kv8.data) % 2 != 0) a.range_error("kv (FP8 latent rows) must start at an even byte offset");
  }
  a.expect_length(out, a.product({T, H, L}, "T*H*kvLora"), shape_str("T*H*kvLora", {T, H, L}));
  a.expect_length(positions, T, shape_str("T", {T}));
  for (int64_t t = 0; t < T; t++)
    if (positions.data[t] < 0 || positions.data[t] >= S)
      a.range_error("positions[" + std::to_string(t) + "] = " + std::to_string(positions.data[t]) +
                    " is out of range [0, S = " + std::to_string(S) + ")");
  if (sparse) {
    a.expect_length(indices, a.product({T, k}, "T*k"), shape_str("T*k", {T, k}));
    for (int64_t i = 0; i < indices.length; i++)
      if (indices.data[i] < -1 || indices.data[i] >= S)
        a.range_error("indices[" + std::to_string(i) + "] = " + std::to_string(indices.data[i]) +
                      " is out of range [-1, S = " + std::to_string(S) + ")");
  }
  a.expect_disjoint(out, q);
  const int32_t* idx = sparse ? indices.data : nullptr;
  if (cache == Cache::Bf16) {
    a.expect_disjoint(out, kv16);
    mla_attention_bf16(out.data, q.data, kv16.data, S, T, H, L, R, static_cast<float>(scale), idx, k, positions.data);
  } else if (cache == Cache::Fp8) {
    a.expect_disjoint(out, kv8);
    mla_attention_fp8(out.data, q.data, kv8.data, S, T, H, L, R, static_cast<float>(scale), idx, k, positions.data);
  } else {
    a.expect_disjoint(out, kv32);
    mla_attention(out.data, q.data, kv32.data, S, T, H, L, R, static_cast<float>(scale), idx, k, positions.data);
  }
  return info.Env().Undefined();
}

// quantizeLatentFp8(dst, rowOffset, src, rows, kvLora, rope): rows [rowOffset, rowOffset + rows) of an FP8 latent cache.
Napi::Value QuantizeLatentFp8(const Napi::CallbackInfo& info) {
  Args a(info, "quantizeLatentFp8", 6);
  auto dst = a.u8(0, "dst");
  const int64_t rowOffset = a.integer(1, "rowOffset", 0, kMaxDim);
  auto src = a.f32(2, "src");
  const int64_t rows = a.integer(3, "rows", 0, kMaxDim);
  const int64_t L = a.integer(4, "kvLora", 0, kMaxDim);
  const int64_t R = a.integer(5, "rope", 0, kMaxDim);
  expect_fp8_kv_lora(a, L);
  const int64_t rb = latent_fp8_row_bytes(L, R);
  a.expect_length(src, a.product({rows, L + R}, "rows*(kvLora+rope)"), shape_str("rows*(kvLora+rope)", {rows, L + R}));
  a.expect_min_length(dst, a.product({rowOffset + rows, rb}, "(rowOffset+rows)*rowBytes"),
                      shape_str("(rowOffset+rows)*rowBytes", {rowOffset + rows, rb}));
  a.expect_disjoint(dst, src);
  quantize_latent_fp8(dst.data, rowOffset, src.data, rows, L, R);
  return info.Env().Undefined();
}

// ---- DSA indexer and top-k -------------------------------------------------------------------------------

// The shapes every indexer op checks: q [T, Hi, D], weights [T, Hi], keys at least [S, D], positions [T].
template <class Q, class K>
void expect_indexer_shapes(const Args& a, const ArrayArg<Q>& q, const ArrayArg<float>& weights, const ArrayArg<K>& keys,
                           const ArrayArg<int32_t>& positions, int64_t T, int64_t S, int64_t Hi, int64_t D) {
  a.expect_length(q, a.product({T, Hi, D}, "T*Hi*D"), shape_str("T*Hi*D", {T, Hi, D}));
  a.expect_length(weights, a.product({T, Hi}, "T*Hi"), shape_str("T*Hi", {T, Hi}));
  a.expect_min_length(keys, a.product({S, D}, "S*D"), shape_str("S*D", {S, D}));
  a.expect_length(positions, T, shape_str("T", {T}));
}

// Arguments 1..9 of indexerScoresFp8 and indexerTopk (the same after the output argument), shapes checked.
struct IndexerFp8Inputs {
  ArrayArg<uint8_t> q;
  ArrayArg<float> weights;
  ArrayArg<uint8_t> keys;
  ArrayArg<float> keyScales;
  int64_t T, S, Hi, D;
  ArrayArg<int32_t> positions;

  explicit IndexerFp8Inputs(const Args& a)
      : q(a.u8(1, "q")),
        weights(a.f32(2, "weights")),
        keys(a.u8(3, "keys")),
        keyScales(a.f32(4, "keyScales")),
        T(a.integer(5, "T", 0, kMaxDim)),
        S(a.integer(6, "S", 0, kMaxDim)),
        Hi(a.integer(7, "Hi", 0, kMaxDim)),
        D(a.integer(8, "D", 0, kMaxDim)),
        positions(a.i32(9, "positions")) {
    expect_indexer_shapes(a, q, weights, keys, positions, T, S, Hi, D);
    a.expect_min_length(keyScales, S, shape_str("S", {S}));
  }

  template <class O>
  void expect_disjoint_from(const Args& a, const ArrayArg<O>& out) const {
    a.expect_disjoint(out, q);
    a.expect_disjoint(out, weights);
    a.expect_disjoint(out, keys);
    a.expect_disjoint(out, keyScales);
    a.expect_disjoint(out, positions);
  }
};

Napi::Value IndexerScores(const Napi::CallbackInfo& info) {
  Args a(info, "indexerScores", 9);
  auto out = a.f32(0, "out");
  auto q = a.f32(1, "q");
  auto weights = a.f32(2, "weights");
  auto keys = a.f32(3, "keys");
  const int64_t T = a.integer(4, "T", 0, kMaxDim);
  const int64_t S = a.integer(5, "S", 0, kMaxDim);
  const int64_t Hi = a.integer(6, "Hi", 0, kMaxDim);
  const int64_t D = a.integer(7, "D", 0, kMaxDim);
  auto positions = a.i32(8, "positions");
  expect_indexer_shapes(a, q, weights, keys, positions, T, S, Hi, D);
  a.expect_length(out, a.product({T, S}, "T*S"), shape_str("T*S", {T, S}));
  a.expect_disjoint(out, q);
  a.expect_disjoint(out, weights);
  a.expect_disjoint(out, keys);
  indexer_scores(out.data, q.data, weights.data, keys.data, T, S, Hi, D, positions.data);
  return info.Env().Undefined();
}

Napi::Value IndexerScoresFp8(const Napi::CallbackInfo& info) {
  Args a(info, "indexerScoresFp8", 10);
  auto out = a.f32(0, "out");
  const IndexerFp8Inputs in(a);
  a.expect_length(out, a.product({in.T, in.S}, "T*S"), shape_str("T*S", {in.T, in.S}));
  in.expect_disjoint_from(a, out);
  indexer_scores_fp8(out.data, in.q.data, in.weights.data, in.keys.data, in.keyScales.data, in.T, in.S, in.Hi, in.D,
                     in.positions.data);
  return info.Env().Undefined();
}

Napi::Value IndexerTopk(const Napi::CallbackInfo& info) {
  Args a(info, "indexerTopk", 11);
  auto idx = a.i32(0, "idx");
  const IndexerFp8Inputs in(a);
  const int64_t k = a.integer(10, "k", 0, kMaxDim);
  a.expect_length(idx, a.product({in.T, k}, "T*k"), shape_str("T*k", {in.T, k}));
  in.expect_disjoint_from(a, idx);
  indexer_topk(idx.data, in.q.data, in.weights.data, in.keys.data, in.keyScales.data, in.T, in.S, in.Hi, in.D,
               in.positions.data, k);
  return info.Env().Undefined();
}

Napi::Value HadamardRows(const Napi::CallbackInfo& info) {
  Args a(info, "hadamardRows", 3);
  auto x = a.f32(0, "x");
  const int64_t N = a.integer(1, "N", 0, kMaxDim);
  const int64_t D = a.integer(2, "D", 0, kMaxDim);
  if (D < 1 || (D & (D - 1)) != 0) a.range_error("D must be a power of two, got " + std::to_string(D));
  a.expect_length(x, a.product({N, D}, "N*D"), shape_str("N*D", {N, D}));
  hadamard_rows(x.data, N, D);
  return info.Env().Undefined();
}

Napi::Value QuantizeFp8Rows(const Napi::CallbackInfo& info) {
  Args a(info, "quantizeFp8Rows", 5);
  auto out = a.u8(0, "out");
  auto scales = a.f32(1, "scales");
  auto x = a.f32(2, "x");
  const int64_t N = a.integer(3, "N", 0, kMaxDim);
  const int64_t D = a.integer(4, "D", 0, kMaxDim);
  const int64_t n = a.product({N, D}, "N*D");
  a.expect_length(x, n, shape_str("N*D", {N, D}));
  a.expect_length(out, n, shape_str("N*D", {N, D}));
  a.expect_length(scales, N, shape_str("N", {N}));
  a.expect_disjoint(out, x);
  a.expect_disjoint(scales, x);
  a.expect_disjoint(out, scales);
  quantize_fp8_rows(out.data, scales.data, x.data, N, D);
  return info.Env().Undefined();
}

Napi::Value TopK(const Napi::CallbackInfo& info) {
  Args a(info, "topk", 5);
  auto idx = a.i32(0, "idx");
  auto scores = a.f32(1, "scores");
  const int64_t T = a.integer(2, "T", 0, kMaxDim);
  const int64_t S = a.integer(3, "S", 0, kMaxDim);
  const int64_t k = a.integer(4, "k", 0, kMaxDim);
  a.expect_length(scores, a.product({T, S}, "T*S"), shape_str("T*S", {T, S}));
  a.expect_length(idx, a.product({T, k}, "T*k"), shape_str("T*k", {T, k}));
  a.expect_disjoint(idx, scores);
  topk(idx.data, scores.data, T, S, k);
  return info.Env().Undefined();
}

// ---- MoE and elementwise ---------------------------------------------------------------------------------

Napi::Value MoeRoute(const Napi::CallbackInfo& info) {
  Args a(info, "moeRoute", 7);
  auto ids = a.i32(0, "ids");
  auto weights = a.f32(1, "weights");
  auto logits = a.f32(2, "logits");
  const int64_t T = a.integer(3, "T", 0, kMaxDim);
  const int64_t E = a.integer(4, "E", 1, kMaxDim);
  const int64_t K = a.integer(5, "K", 1, kMaxDim);
  if (!info[6].IsObject()) a.type_error("opts must be an object");
  Napi::Object o = info[6].As<Napi::Object>();
  RouterParams p;
  const Napi::Value scoring = o.Get("scoring"), method = o.Get("method");
  const std::string sc = scoring.IsString() ? scoring.As<Napi::String>().Utf8Value() : "";
  if (sc == "sigmoid") p.scoring = RouterScoring::Sigmoid;
  else if (sc == "softmax") p.scoring = RouterScoring::Softmax;
  else a.type_error("opts.scoring must be 'sigmoid' or 'softmax'");
  const std::string me = method.IsString() ? method.As<Napi::String>().Utf8Value() : "";
  if (me == "greedy") p.method = RouterMethod::Greedy;
  else if (me == "group_limited_greedy") p.method = RouterMethod::GroupLimitedGreedy;
  else if (me == "noaux_tc") p.method = RouterMethod::NoAuxTc;
  else a.type_error("opts.method must be 'greedy', 'group_limited_greedy' or 'noaux_tc'");
  auto int_opt = [&](const char* key, const char* name, int64_t lo, int64_t hi) -> int64_t {
    const Napi::Value v = o.Get(key);
    if (!v.IsNumber()) a.type_error(std::string(name) + " must be a number");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || std::floor(d) != d) a.type_error(std::string(name) + " must be an integer");
    if (d < static_cast<double>(lo) || d > static_cast<double>(hi))
      a.range_error(std::string(name) + " = " + std::to_string(static_cast<long long>(d)) + " is out of range [" +
                    std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return static_cast<int64_t>(d);
  };
  p.n_group = int_opt("nGroup", "opts.nGroup", 1, E);
  p.topk_group = int_opt("topkGroup", "opts.topkGroup", 1, p.n_group);
  if (E % p.n_group != 0)
    a.range_error("E = " + std::to_string(E) + " is not a multiple of opts.nGroup = " + std::to_string(p.n_group));
  const Napi::Value bias = o.Get("bias");
  if (!bias.IsNull() && !bias.IsUndefined()) {
    if (!bias.IsTypedArray() || bias.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      a.type_error("opts.bias must be a Float32Array or null");
    Napi::Float32Array b = bias.As<Napi::Float32Array>();
    if (static_cast<int64_t>(b.ElementLength()) != E)
      a.range_error("opts.bias has length " + std::to_string(b.ElementLength()) + ", expected " + std::to_string(E) + " (E)");
    p.bias = b.Data();
  }
  const Napi::Value norm = o.Get("normTopk");
  if (!norm.IsBoolean()) a.type_error("opts.normTopk must be a boolean");
  p.norm_topk = norm.As<Napi::Boolean>().Value();
  const Napi::Value scale = o.Get("scale");
  if (!scale.IsNumber() || !std::isfinite(scale.As<Napi::Number>().DoubleValue()))
    a.type_error("opts.scale must be a finite number");
  p.scale = static_cast<float>(scale.As<Napi::Number>().DoubleValue());
  if (K > E) a.range_error("K = " + std::to_string(K) + " exceeds E = " + std::to_string(E));
  a.expect_length(logits, a.product({T, E}, "T*E"), shape_str("T*E", {T, E}));
  a.expect_length(ids, a.product({T, K}, "T*K"), shape_str("T*K", {T, K}));
  a.expect_length(weights, a.product({T, K}, "T*K"), shape_str("T*K", {T, K}));
  a.expect_disjoint(weights, logits);
  a.expect_disjoint(ids, logits);
  a.expect_disjoint(ids, weights);
  moe_route(ids.data, weights.data, logits.data, T, E, K, p);
  return info.Env().Undefined();
}

Napi::Value SiluMul(const Napi::CallbackInfo& info) {
  Args a(info, "siluMul", 4);
  auto out = a.f32(0, "out");
  auto gate = a.f32(1, "gate");
  auto up = a.f32(2, "up");
  const int64_t n = a.integer(3, "n", 0, int64_t(1) << 53);
  a.expect_min_length(out, n, shape_str("n", {n}));
  a.expect_min_length(gate, n, shape_str("n", {n}));
  a.expect_min_length(up, n, shape_str("n", {n}));
  ArrayArg<float> o1 = out, g1 = gate, u1 = up;
  o1.length = g1.length = u1.length = n;
  a.expect_disjoint(o1, g1, true);
  a.expect_disjoint(o1, u1, true);
  silu_mul(out.data, gate.data, up.data, n);
  return info.Env().Undefined();
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  AddonData* data = new AddonData();
  data->weight_ctor = Napi::Persistent(NativeWeight::Define(env));
  env.SetInstanceData<AddonData>(data);

  const auto ro = static_cast<napi_property_attributes>(napi_enumerable);
  exports.DefineProperty(Napi::PropertyDescriptor::Value("version", Napi::String::New(env, GLANCE_VERSION), ro));
  struct Fn {
    const char* name;
    Napi::Value (*fn)(const Napi::CallbackInfo&);
  };
  const Fn fns[] = {
      {"backends", Backends},
      {"setThreads", SetThreads},
      {"measureReadBandwidth", MeasureReadBandwidth},
      {"mapFile", MapFile},
      {"allocCacheBuffer", AllocCacheBuffer},
      {"createWeight", CreateWeight},
      {"toFloat32", ToFloat32},
      {"matmul", Matmul},
      {"embedding", Embedding},
      {"rmsNorm", RmsNorm},
      {"layerNorm", LayerNorm},
      {"rope", Rope},
      {"mlaAbsorbQuery", MlaAbsorbQuery},
      {"mlaExpandValue", MlaExpandValue},
      {"mlaAttention", MlaAttention},
      {"indexerScores", IndexerScores},
      {"indexerScoresFp8", IndexerScoresFp8},
      {"indexerTopk", IndexerTopk},
      {"hadamardRows", HadamardRows},
      {"quantizeFp8Rows", QuantizeFp8Rows},
      {"quantizeLatentFp8", QuantizeLatentFp8},
      {"topk", TopK},
      {"moeRoute", MoeRoute},
      {"siluMul", SiluMul},
  };
  for (const Fn& f : fns) exports.Set(f.name, Napi::Function::New(env, f.fn, f.name));
  register_cuda(env, exports);  // cudaInfo() and the `cuda` namespace (empty without CUDA)
  return exports;
}

}  // namespace binding
}  // namespace glance

static Napi::Object InitGlanceNative(Napi::Env env, Napi::Object exports) { return glance::binding::Init(env, exports); }

NODE_API_MODULE(glance_native, InitGlanceNative)
