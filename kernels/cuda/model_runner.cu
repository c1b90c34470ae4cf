// GpuModel / GpuSequence (model_runner.cuh): the forward pass of sidecar/src/engine/model.ts, op for op, on the
// device. Per layer:
//   x = rms(h); q = q_b(rms(q_a x)) | q_proj x; rope(q_pe); [c_kv | k_pe] = kv_a x, rms(c_kv), rope(k_pe) → bf16 cache
//   indexer keys (LayerNorm, half-split rope, Hadamard + e4m3 rows) → key cache; when the context exceeds top-k:
//   indexer query/weights → scores → exact top-k; latent MQA attention over the selection (or dense causal);
//   h += o_proj(W_UV · o); h += MLP(rms h) (dense SwiGLU, or routed experts through the token→expert permutation
//   and grouped GEMMs, + shared expert); logits = lm_head(rms h).
// Position-dependent values (token ids, positions) live in device memory, so a single-token step can be captured
// once as a CUDA graph and replayed with new inputs written to pinned host buffers the graph copies from.
#include "model_runner.cuh"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "common.cuh"
#include "model_ops.cuh"
#include "sparse_mla.cuh"
#include "topk.cuh"

namespace glance {
namespace cuda {

namespace {

std::string mib(int64_t b) { return std::to_string((b + (1 << 19)) >> 20) + " MiB"; }

struct DevMlp {
  DevWeight gate, up, down;
};

struct DevLayer {
  float* input_norm = nullptr;
  float* post_norm = nullptr;
  float* q_a_norm = nullptr;
  float* kv_a_norm = nullptr;
  float* ix_kn_w = nullptr;
  float* ix_kn_b = nullptr;
  float* router_bias = nullptr;
  bool has_q_lora = false, has_indexer = false, is_moe = false, has_shared = false;
  DevWeight q_proj, q_a, q_b, kv_a, kv_b, o_proj, ix_wq_b, ix_wk, ix_wp, router;
  DevMlp dense, shared;
  DevWeight* gate_table = nullptr;  // [E] on the device
  DevWeight* up_table = nullptr;
  DevWeight* down_table = nullptr;
  DevMlp expert_shape;
};

}  // namespace

// ---- model -------------------------------------------------------------------------------------------------
class GpuModelImpl {
 public:
  ModelSpec spec;  // host weights are not kept past construction (pointers cleared)
  std::vector<DevLayer> layers;
  DevWeight embed, lm_head;
  float* final_norm = nullptr;
  float* inv_freq = nullptr;
  int64_t budget = 0, used = 0, weights = 0;
  std::vector<void*> owned;
  std::string device_name;
  int sm_count = 0, cc_major = 0, cc_minor = 0;
  int inter_max = 0;  // widest MLP intermediate (dense, experts · K, shared)

  ~GpuModelImpl() {
    for (void* p : owned) cudaFree(p);
  }

  void* alloc(int64_t bytes, const std::string& what) {
    if (bytes <= 0) bytes = 16;
    if (used + bytes > budget)
      throw std::runtime_error("GPU memory budget exceeded: " + what + " needs " + mib(bytes) + " more, " + mib(used) +
                               " of the " + mib(budget) + " budget in use (raise --gpu-memory, or use --device cpu)");
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, static_cast<size_t>(bytes));
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw std::runtime_error("cudaMalloc of " + mib(bytes) + " for " + what + " failed: " + cudaGetErrorString(e) +
                               " (" + mib(used) + " allocated by this model)");
    }
    used += bytes;
    return p;
  }
  void release(void* p, int64_t bytes) {
    if (!p) return;
    cudaFree(p);
    used -= bytes <= 0 ? 16 : bytes;
  }
  void* alloc_owned(int64_t bytes, const std::string& what) {
    void* p = alloc(bytes, what);
    owned.push_back(p);
    return p;
  }

  float* upload_vec(const std::vector<float>& v, const std::string& what) {
    if (v.empty()) return nullptr;
    float* d = static_cast<float*>(alloc_owned(static_cast<int64_t>(v.size() * 4), what));
    GLANCE_CUDA_CHECK(cudaMemcpy(d, v.data(), v.size() * 4, cudaMemcpyHostToDevice));
    weights += static_cast<int64_t>(v.size() * 4);
    return d;
  }

  DevWeight upload(const Weight& w, const std::string& what) {
    DevWeight d;
    if (w.data == nullptr) return d;
    const int64_t bytes = w.rows * w.cols * static_cast<int64_t>(dtype_size(w.dtype));
    void* data = alloc_owned(bytes, what);
    GLANCE_CUDA_CHECK(cudaMemcpy(data, w.data, static_cast<size_t>(bytes), cudaMemcpyHostToDevice));
    d.data = static_cast<const uint8_t*>(data);
    d.dtype = static_cast<int>(w.dtype);
    d.rows = static_cast<int>(w.rows);
    d.cols = static_cast<int>(w.cols);
    weights += bytes;
    if (w.dtype == DType::F8_E4M3) {
      const int64_t sr = (w.rows + kFp8Block - 1) / kFp8Block;
      const int64_t sbytes = sr * w.scale_cols * 4;
      void* sc = alloc_owned(sbytes, what + " (weight_scale_inv)");
      GLANCE_CUDA_CHECK(cudaMemcpy(sc, w.scale_inv, static_cast<size_t>(sbytes), cudaMemcpyHostToDevice));
      d.scale_inv = static_cast<const float*>(sc);
      d.scale_cols = static_cast<int>(w.scale_cols);
      weights += sbytes;
    }
    return d;
  }

  DevMlp upload_mlp(const HostMlp& m, const std::string& what) {
    return {upload(m.gate, what + ".gate_proj"), upload(m.up, what + ".up_proj"), upload(m.down, what + ".down_proj")};
  }

  DevWeight* upload_table(const std::vector<DevWeight>& t, const std::string& what) {
    DevWeight* d = static_cast<DevWeight*>(alloc_owned(static_cast<int64_t>(t.size() * sizeof(DevWeight)), what));
    GLANCE_CUDA_CHECK(cudaMemcpy(d, t.data(), t.size() * sizeof(DevWeight), cudaMemcpyHostToDevice));
    return d;
  }
};

GpuModel::GpuModel(const ModelSpec& spec, void (*progress)(void*, int, int), void* ctx) : impl_(new GpuModelImpl()) {
  GpuModelImpl& m = *impl_;
  m.spec = spec;
  m.spec.layers.clear();
  const DeviceInfo di = device_info();
  if (!di.available) throw std::runtime_error("no CUDA device: " + di.reason);
  m.device_name = di.name;
  m.sm_count = di.sm_count;
  m.cc_major = di.cc_major;
  m.cc_minor = di.cc_minor;
  size_t free_b = 0, total_b = 0;
  GLANCE_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const int64_t avail = static_cast<int64_t>(free_b) - (int64_t(512) << 20);  // leave room for the CUDA context's own needs
  m.budget = spec.budget_bytes > 0 ? spec.budget_bytes : static_cast<int64_t>(0.9 * static_cast<double>(free_b));
  if (spec.budget_bytes > 0 && spec.budget_bytes > avail)
    throw std::runtime_error("--gpu-memory " + mib(spec.budget_bytes) + " exceeds the device's free memory (" + mib(free_b) +
                             " free of " + mib(total_b) + " on " + di.name + ")");
  m.inv_freq = m.upload_vec(spec.inv_freq, "rope inv_freq");
  m.embed = m.upload(spec.embed, "model.embed_tokens.weight");
  m.lm_head = spec.lm_head.data == spec.embed.data ? m.embed : m.upload(spec.lm_head, "lm_head.weight");
  m.final_norm = m.upload_vec(spec.final_norm, "model.norm.weight");
  const int L = static_cast<int>(spec.layers.size());
  m.inter_max = 1;
  for (int l = 0; l < L; l++) {
    const HostLayer& hl = spec.layers[l];
    const std::string p = "model.layers." + std::to_string(l);
    DevLayer d;
    d.input_norm = m.upload_vec(hl.input_norm, p + ".input_layernorm.weight");
    d.post_norm = m.upload_vec(hl.post_attention_norm, p + ".post_attention_layernorm.weight");
    d.has_q_lora = hl.has_q_lora;
    if (hl.has_q_lora) {
      d.q_a = m.upload(hl.q_a, p + ".self_attn.q_a_proj.weight");
      d.q_b = m.upload(hl.q_b, p + ".self_attn.q_b_proj.weight");
      d.q_a_norm = m.upload_vec(hl.q_a_norm, p + ".self_attn.q_a_layernorm.weight");
    } else {
      d.q_proj = m.upload(hl.q_proj, p + ".self_attn.q_proj.weight");
    }
    d.kv_a = m.upload(hl.kv_a, p + ".self_attn.kv_a_proj_with_mqa.weight");
    d.kv_a_norm = m.upload_vec(hl.kv_a_norm, p + ".self_attn.kv_a_layernorm.weight");
    d.kv_b = m.upload(hl.kv_b, p + ".self_attn.kv_b_proj.weight");
    d.o_proj = m.upload(hl.o_proj, p + ".self_attn.o_proj.weight");
    d.has_indexer = hl.has_indexer;
    if (hl.has_indexer) {
      d.ix_wq_b = m.upload(hl.ix_wq_b, p + ".self_attn.indexer.wq_b.weight");
      d.ix_wk = m.upload(hl.ix_wk, p + ".self_attn.indexer.wk.weight");
      d.ix_wp = m.upload(hl.ix_weights_proj, p + ".self_attn.indexer.weights_proj.weight");
      d.ix_kn_w = m.upload_vec(hl.ix_k_norm_weight, p + ".self_attn.indexer.k_norm.weight");
      d.ix_kn_b = m.upload_vec(hl.ix_k_norm_bias, p + ".self_attn.indexer.k_norm.bias");
    }
    d.is_moe = hl.is_moe;
    if (hl.is_moe) {
      d.router = m.upload(hl.router, p + ".mlp.gate.weight");
      d.router_bias = m.upload_vec(hl.router_bias, p + ".mlp.gate.e_score_correction_bias");
      std::vector<DevWeight> g, u, dn;
      for (size_t e = 0; e < hl.experts.size(); e++) {
        const DevMlp x = m.upload_mlp(hl.experts[e], p + ".mlp.experts." + std::to_string(e));
        if (e > 0 && (x.gate.rows != g[0].rows || x.gate.cols != g[0].cols || x.gate.dtype != g[0].dtype ||
                      x.down.rows != dn[0].rows || x.down.cols != dn[0].cols || x.down.dtype != dn[0].dtype))
          throw std::runtime_error(p + ".mlp.experts." + std::to_string(e) + ": experts of a layer must share shape and dtype");
        g.push_back(x.gate);
        u.push_back(x.up);
        dn.push_back(x.down);
      }
      d.gate_table = m.upload_table(g, p + " expert table");
      d.up_table = m.upload_table(u, p + " expert table");
      d.down_table = m.upload_table(dn, p + " expert table");
      d.expert_shape = {g[0], u[0], dn[0]};
      m.inter_max = std::max(m.inter_max, g[0].rows * spec.experts_per_tok);
      d.has_shared = hl.has_shared;
      if (hl.has_shared) {
        d.shared = m.upload_mlp(hl.shared, p + ".mlp.shared_experts");
        m.inter_max = std::max(m.inter_max, d.shared.gate.rows);
      }
    } else {
      d.dense = m.upload_mlp(hl.dense, p + ".mlp");
      m.inter_max = std::max(m.inter_max, d.dense.gate.rows);
    }
    m.layers.push_back(d);
    if (progress) progress(ctx, l + 1, L);
  }
}

GpuModel::~GpuModel() = default;

std::string GpuModel::describe() const {
  const GpuModelImpl& m = *impl_;
  return "CUDA " + m.device_name + " (compute " + std::to_string(m.cc_major) + "." + std::to_string(m.cc_minor) + ", " +
         std::to_string(m.sm_count) + " SMs), weights " + mib(m.weights) + ", budget " + mib(m.budget);
}
int64_t GpuModel::weight_bytes() const { return impl_->weights; }
int64_t GpuModel::budget_bytes() const { return impl_->budget; }
int64_t GpuModel::used_bytes() const { return impl_->used; }

int64_t GpuModel::bytes_per_token() const {
  const ModelSpec& s = impl_->spec;
  const int64_t latent = s.kv_lora + s.rope;
  int64_t per_layer = latent * (s.kv_cache_fp32 ? 4 : 2);
  const bool ix = s.sparse && s.index_heads > 0;
  if (ix) per_layer += s.indexer_fp8 ? s.index_dim + 4 : s.index_dim * 4;
  // + one row of the chunk's indexer score matrix per cached token
  return per_layer * static_cast<int64_t>(impl_->layers.size()) + (ix ? int64_t(kPrefillChunk) * 4 : 0);
}

int64_t GpuModel::sequence_scratch_bytes(int) const {
  const ModelSpec& s = impl_->spec;
  const int64_t C = kPrefillChunk, D = s.hidden, H = s.heads, latent = s.kv_lora + s.rope, qh = s.nope + s.rope;
  const int64_t K = std::max(1, s.experts_per_tok), E = std::max(1, s.experts);
  int64_t f = 0;
  f += 3 * C * D + C * std::max(1, s.q_lora) + C * H * qh + C * latent + C * H * latent + C * H * s.kv_lora + C * H * s.v_head;
  f += C * s.index_dim + 2 * C * s.index_heads * s.index_dim + 2 * C * s.index_heads;
  f += 2 * C * impl_->inter_max + C * K * D + C * E + 2 * C * K + C * s.vocab + s.vocab;
  int64_t i = 2 * C + C * std::max(1, s.index_topk) + 3 * C * K + E + 1 + 4 * (C * K / kGemmTileM + E) + 16;
  return (f + i) * 4 + 4096;
}

// ---- sequence ----------------------------------------------------------------------------------------------
class GpuSequenceImpl {
 public:
  GpuModelImpl& m;
  const ModelSpec& s;
  int cap = 0, used = 0;
  bool use_graph = true;
  cudaStream_t stream = nullptr;
  std::vector<std::pair<void*, int64_t>> allocs;
  // caches
  std::vector<void*> kv;  // bf16 or fp32 rows [cap, kvLora + rope]
  std::vector<uint8_t*> ix8;
  std::vector<float*> ixscale;
  std::vector<float*> ixf32;
  // scratch
  int *ids_d = nullptr, *pos_d = nullptr, *idx = nullptr, *rids = nullptr, *counts = nullptr, *slot_rows = nullptr,
      *slot_pos = nullptr, *num_tiles = nullptr, *token_d = nullptr;
  int4* tiles = nullptr;
  float *h = nullptr, *x = nullptr, *mlp_out = nullptr, *qr = nullptr, *q = nullptr, *kvrows = nullptr, *qabs = nullptr,
        *o = nullptr, *ov = nullptr, *keys = nullptr, *qi = nullptr, *wts = nullptr, *qscale = nullptr, *scores = nullptr,
        *g = nullptr, *u = nullptr, *y = nullptr, *rlogits = nullptr, *rwts = nullptr, *logits = nullptr, *u_d = nullptr;
  uint8_t* q8 = nullptr;
  // tuned attention (3a's kernels): workspaces and the bf16 query
  void* topk_ws = nullptr;
  size_t topk_ws_bytes = 0;
  void* mla_ws = nullptr;
  size_t mla_ws_bytes = 0;
  uint16_t* qabs16 = nullptr;
  bool tuned_mla = false;
  // pinned host
  int* ids_h = nullptr;
  int* pos_h = nullptr;
  int* token_h = nullptr;
  float* u_h = nullptr;
  float* logits_h = nullptr;
  // graphs by (bucket, with logits)
  std::map<int64_t, cudaGraphExec_t> graphs;
  std::vector<cudaGraph_t> graph_defs;
  int captured = 0;

  GpuSequenceImpl(GpuModelImpl& model, int capacity) : m(model), s(model.spec), cap(capacity) {}

  ~GpuSequenceImpl() {
    if (stream) cudaStreamSynchronize(stream);
    for (auto& kvp : graphs) cudaGraphExecDestroy(kvp.second);
    for (cudaGraph_t gdef : graph_defs) cudaGraphDestroy(gdef);
    for (auto& a : allocs) m.release(a.first, a.second);
    if (ids_h) cudaFreeHost(ids_h);  // pos_h and u_h live in the same block
    if (token_h) cudaFreeHost(token_h);
    if (logits_h) cudaFreeHost(logits_h);
    if (stream) cudaStreamDestroy(stream);
  }

  template <class T>
  T* take(int64_t count, const std::string& what) {
    const int64_t bytes = std::max<int64_t>(count, 1) * static_cast<int64_t>(sizeof(T));
    void* p = m.alloc(bytes, what);
    allocs.push_back({p, bytes});
    return static_cast<T*>(p);
  }

  bool uses_indexer() const { return s.sparse && s.index_heads > 0; }

  void allocate() {
    GLANCE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    const int64_t C = kPrefillChunk, D = s.hidden, H = s.heads, latent = s.kv_lora + s.rope, qh = s.nope + s.rope;
    const int64_t K = std::max(1, s.experts_per_tok), E = std::max(1, s.experts), Hi = s.index_heads, Di = s.index_dim;
    const int nl = static_cast<int>(m.layers.size());
    const std::string what = "the KV cache of " + std::to_string(cap) + " tokens";
    for (int l = 0; l < nl; l++) {
      kv.push_back(s.kv_cache_fp32 ? static_cast<void*>(take<float>(cap * latent, what))
                                   : static_cast<void*>(take<uint16_t>(cap * latent, what)));
      if (uses_indexer()) {
        if (s.indexer_fp8) {
          ix8.push_back(take<uint8_t>(cap * Di, what + " (indexer keys)"));
          ixscale.push_back(take<float>(cap, what + " (indexer key scales)"));
        } else {
          ixf32.push_back(take<float>(cap * Di, what + " (indexer keys)"));
        }
      }
    }
    const std::string sw = "sequence scratch";
    // ids [C] | positions [C] | the sampler's uniform: one block, so that a decode step uploads its inputs with one
    // copy (a graph node each: three copies cost more than one of 2 KB)
    ids_d = take<int>(2 * C + 1, sw);
    pos_d = ids_d + C;
    u_d = reinterpret_cast<float*>(ids_d + 2 * C);
    h = take<float>(C * D, sw);
    x = take<float>(C * D, sw);
    mlp_out = take<float>(C * D, sw);
    qr = take<float>(C * std::max(1, s.q_lora), sw);
    q = take<float>(C * H * qh, sw);
    kvrows = take<float>(C * latent, sw);
    qabs = take<float>(C * H * latent, sw);
    o = take<float>(C * H * s.kv_lora, sw);
    ov = take<float>(C * H * s.v_head, sw);
    if (uses_indexer()) {
      keys = take<float>(C * Di, sw);
      qi = take<float>(C * Hi * Di, sw);
      wts = take<float>(C * Hi, sw);
      q8 = take<uint8_t>(C * Hi * Di, sw);
      qscale = take<float>(C * Hi, sw);
      scores = take<float>(C * static_cast<int64_t>(cap), "the indexer score matrix (" + std::to_string(C) + " × " + std::to_string(cap) + ")");
      idx = take<int>(C * s.index_topk, sw);
      if (s.tuned_attention) {
        topk_ws_bytes = std::max<size_t>(topk_workspace_bytes(C, cap), 16);
        topk_ws = take<uint8_t>(static_cast<int64_t>(topk_ws_bytes), sw);
        // top-k's workspace is zero between calls; on this sequence's stream (non-blocking: a cudaMemset on the
        // legacy stream would not be ordered before its kernels)
        GLANCE_CUDA_CHECK(cudaMemsetAsync(topk_ws, 0, topk_ws_bytes, stream));
        const int L = s.kv_lora, R = s.rope;
        tuned_mla = !s.kv_cache_fp32 && L % 16 == 0 && L <= 512 && (L + R) % 8 == 0 && L + R <= 640;
        if (tuned_mla) {
          // the split-KV plan depends on T: take the largest workspace any chunk length needs
          mla_ws_bytes = 16;
          for (int64_t t = 1; t <= C; t++) mla_ws_bytes = std::max(mla_ws_bytes, sparse_mla_workspace_bytes(t, H, L, R, s.index_topk));
          mla_ws = take<uint8_t>(static_cast<int64_t>(mla_ws_bytes), sw);
          GLANCE_CUDA_CHECK(cudaMemsetAsync(mla_ws, 0, mla_ws_bytes, stream));  // its split arrival counters start at zero
          qabs16 = take<uint16_t>(C * H * latent, sw);
        }
      }
    }
    g = take<float>(C * m.inter_max, sw);
    u = take<float>(C * m.inter_max, sw);
    y = take<float>(C * K * D, sw);
    rlogits = take<float>(C * E, sw);
    rids = take<int>(C * K, sw);
    rwts = take<float>(C * K, sw);
    counts = take<int>(E + 1, sw);
    slot_rows = take<int>(C * K, sw);
    slot_pos = take<int>(C * K, sw);
    tiles = take<int4>(C * K / kGemmTileM + E + 1, sw);
    num_tiles = take<int>(1, sw);
    logits = take<float>(C * s.vocab, sw);
    token_d = take<int>(1, sw);
    GLANCE_CUDA_CHECK(cudaMallocHost(&ids_h, (2 * C + 1) * sizeof(int)));  // the same layout as ids_d
    pos_h = ids_h + C;
    u_h = reinterpret_cast<float*>(ids_h + 2 * C);
    GLANCE_CUDA_CHECK(cudaMallocHost(&token_h, sizeof(int)));
    GLANCE_CUDA_CHECK(cudaMallocHost(&logits_h, static_cast<size_t>(s.vocab) * sizeof(float)));
  }

  // Column bound of the indexer score rows for a context of S tokens: exact for prompts, rounded up to 2048 for
  // single-token steps so that one captured graph serves a range of contexts (columns past the context are −inf by
  // the causal mask and never selected: the result does not depend on the bound).
  int score_bound(int S, int T) const {
    if (T > 1) return S;
    const int b = ((S + 2047) / 2048) * 2048;
    return std::min(b, cap);
  }

  // Enqueues the forward pass of T tokens at positions start.. (ids_d / pos_d already hold them), then the final
  // norm and the LM head of the last row (or every row) into `logits`.
  void enqueue(int T, int start, bool all_logits) {
    cudaStream_t st = stream;
    const int D = s.hidden, H = s.heads, latent = s.kv_lora + s.rope, qh = s.nope + s.rope;
    const int S = start + T;
    const int Sb = score_bound(S, T);
    const float af = s.rope_attention_factor;
    embedding(st, h, ids_d, T, m.embed);
    // Decode-sized T: the GEMVs that read the same (normalised) activation run as one batch with the RMSNorm folded
    // in (gemv_batch), the MoE block as three launches; larger T: the GEMM path, op by op.
    const bool fuse = T <= kGemvMaxM;
    for (size_t l = 0; l < m.layers.size(); l++) {
      const DevLayer& L = m.layers[l];
      const bool indexer = L.has_indexer && uses_indexer();
      const bool sparse = indexer && S > s.index_topk;  // this layer selects its rows by the indexer
      const int Hi = s.index_heads, Di = s.index_dim, k = s.index_topk;
      // ---- attention: projections of rms(h) ----
      if (fuse) {
        GemvBatch a = batch(h, D, T, L.input_norm, s.rms_eps);
        if (L.has_q_lora) add(a, L.q_a, qr, s.q_lora);
        else add(a, L.q_proj, q, H * qh);
        add(a, L.kv_a, kvrows, latent);
        if (indexer) add(a, L.ix_wk, keys, Di);
        if (sparse) add(a, L.ix_wp, wts, Hi);
        gemv_batch(st, a);
        if (L.has_q_lora) {
          GemvBatch b = batch(qr, s.q_lora, T, L.q_a_norm, 1e-6f);
          add(b, L.q_b, q, H * qh);
          if (sparse) add(b, L.ix_wq_b, qi, Hi * Di);
          gemv_batch(st, b);
        } else if (sparse) {
          lin(st, qi, Hi * Di, qr, s.q_lora, T, L.ix_wq_b, false);
        }
      } else {
        rms_norm(st, x, D, h, D, T, D, L.input_norm, s.rms_eps);
        if (L.has_q_lora) {
          lin(st, qr, s.q_lora, x, D, T, L.q_a, false);
          rms_norm(st, qr, s.q_lora, qr, s.q_lora, T, s.q_lora, L.q_a_norm, 1e-6f);
          lin(st, q, H * qh, qr, s.q_lora, T, L.q_b, false);
        } else {
          lin(st, q, H * qh, x, D, T, L.q_proj, false);
        }
        lin(st, kvrows, latent, x, D, T, L.kv_a, false);
        if (indexer) lin(st, keys, Di, x, D, T, L.ix_wk, false);
        if (sparse) {
          lin(st, qi, Hi * Di, qr, s.q_lora, T, L.ix_wq_b, false);
          lin(st, wts, Hi, x, D, T, L.ix_wp, false);
        }
      }
      const bool tuned_sparse = sparse && tuned_mla;
      const float fold = static_cast<float>(std::pow(static_cast<double>(Hi), -0.5) * std::pow(static_cast<double>(Di), -0.5));
      // The row work after the projections: the latent row (RMSNorm of c_kv, RoPE of k_pe, cache store), the indexer
      // key row (LayerNorm → half-split RoPE → Hadamard → e4m3 into the key cache), the indexer query rows (RoPE →
      // Hadamard → e4m3, scale folded into the head weight), the query absorption (with the RoPE of q_pe and the bf16
      // copy the tuned sparse MLA reads)
      const KvFinalizeArgs kv_args = kv_finalize_args(kv[l], s.kv_cache_fp32, kvrows, T, s.kv_lora, s.rope, L.kv_a_norm,
                                                      1e-6f, pos_d, m.inv_freq, af);
      const AbsorbArgs absorb = absorb_args(qabs, tuned_sparse ? qabs16 : nullptr, latent, q, qh, T, H, s.nope, s.v_head,
                                            s.rope, L.kv_b, pos_d, m.inv_freq, af);
      IndexerRowsArgs key_rows, query_rows;
      if (indexer && s.indexer_fp8)
        key_rows = indexer_rows_args(ix8[l], ixscale[l], keys, T, Di, 1, L.ix_kn_w, L.ix_kn_b, 1e-6f, s.rope, pos_d,
                                     m.inv_freq, af, pos_d, nullptr, 0.0f);
      if (sparse && s.indexer_fp8)
        query_rows = indexer_rows_args(q8, qscale, qi, T * Hi, Di, Hi, nullptr, nullptr, 0.0f, s.rope, pos_d, m.inv_freq,
                                       af, nullptr, wts, fold);
      if (fuse && (!indexer || (s.indexer_fp8 && decode_row_ops_fit(Di)))) {
        decode_row_ops(st, kv_args, key_rows, query_rows, absorb);  // one launch
      } else {
        if (s.kv_cache_fp32)
          kv_finalize(st, static_cast<float*>(kv[l]), kvrows, T, s.kv_lora, s.rope, L.kv_a_norm, 1e-6f, pos_d, m.inv_freq, af);
        else
          kv_finalize(st, static_cast<uint16_t*>(kv[l]), kvrows, T, s.kv_lora, s.rope, L.kv_a_norm, 1e-6f, pos_d, m.inv_freq, af);
        mla_absorb_query_rope(st, qabs, latent, q, qh, T, H, s.nope, s.v_head, s.rope, L.kv_b, pos_d, m.inv_freq, af,
                              tuned_sparse ? qabs16 : nullptr);
        if (indexer && s.indexer_fp8)
          indexer_rows(st, ix8[l], ixscale[l], keys, T, Di, 1, L.ix_kn_w, L.ix_kn_b, 1e-6f, s.rope, pos_d, m.inv_freq, af,
                       pos_d, nullptr, 0.0f);
        if (sparse && s.indexer_fp8)
          indexer_rows(st, q8, qscale, qi, T * Hi, Di, Hi, nullptr, nullptr, 0.0f, s.rope, pos_d, m.inv_freq, af, nullptr,
                       wts, fold);
      }
      const int* sel = nullptr;
      if (indexer) {
        if (!s.indexer_fp8) {
          layer_norm(st, keys, Di, keys, Di, T, Di, L.ix_kn_w, L.ix_kn_b, 1e-6f);
          rope(st, keys, T, 1, Di, 0, s.rope, pos_d, m.inv_freq, af, false);
          scatter_rows(st, ixf32[l], keys, T, Di, pos_d);
        }
        if (sparse) {
          if (s.indexer_fp8) {
            indexer_scores_fp8_generic(st, scores, Sb, q8, wts, ix8[l], ixscale[l], T, Sb, Hi, Di, pos_d);
          } else {
            rope(st, qi, T, Hi, Di, 0, s.rope, pos_d, m.inv_freq, af, false);
            scale_inplace(st, wts, static_cast<int64_t>(T) * Hi, fold, nullptr);
            indexer_scores_f32_generic(st, scores, Sb, qi, wts, ixf32[l], T, Sb, Hi, Di, pos_d);
          }
          if (topk_ws) topk(idx, scores, Sb, T, Sb, k, topk_ws, topk_ws_bytes, st);
          else topk_generic(st, idx, scores, Sb, T, Sb, k, nullptr);
          sel = idx;
        }
      }
      if (tuned_sparse) {
        sparse_mla_attention(o, qabs16, static_cast<const uint16_t*>(kv[l]), cap, T, H, s.kv_lora, s.rope, s.softmax_scale,
                             sel, s.index_topk, mla_ws, mla_ws_bytes, st);
      } else if (s.kv_cache_fp32)
        mla_attention_generic(st, o, qabs, static_cast<const float*>(kv[l]), T, H, s.kv_lora, s.rope, s.softmax_scale, sel,
                              sel ? s.index_topk : 0, pos_d);
      else
        mla_attention_generic(st, o, qabs, static_cast<const uint16_t*>(kv[l]), T, H, s.kv_lora, s.rope, s.softmax_scale,
                              sel, sel ? s.index_topk : 0, pos_d);
      mla_expand_value(st, ov, o, T, H, s.kv_lora, s.nope, s.v_head, L.kv_b);
      lin(st, h, D, ov, H * s.v_head, T, L.o_proj, true);
      // ---- MLP ----
      if (fuse && !L.is_moe && same_kind(L.dense.gate, L.dense.up)) {
        GemvBatch b = batch(h, D, T, L.post_norm, s.rms_eps);
        add(b, L.dense.gate, g, L.dense.gate.rows, &L.dense.up);
        gemv_batch(st, b);
        lin(st, h, D, g, L.dense.gate.rows, T, L.dense.down, true);
      } else if (fuse && T == 1 && moe_decode_fusable(L)) {
        moe_decode(st, L);
      } else {
        rms_norm(st, x, D, h, D, T, D, L.post_norm, s.rms_eps);
        if (!L.is_moe) {
          const int I = L.dense.gate.rows;
          swiglu(st, g, x, T, L.dense);
          lin(st, h, D, g, I, T, L.dense.down, true);
        } else {
          moe(st, L, T);
        }
      }
    }
    const int rows = all_logits ? T : 1;
    const float* last = h + static_cast<size_t>(all_logits ? 0 : T - 1) * D;
    if (rows <= kGemvMaxM) {
      GemvBatch b = batch(last, D, rows, m.final_norm, s.rms_eps);
      add(b, m.lm_head, logits, s.vocab);
      gemv_batch(st, b);
    } else {
      rms_norm(st, x, D, last, D, rows, D, m.final_norm, s.rms_eps);
      lin(st, logits, s.vocab, x, D, rows, m.lm_head, false);
    }
  }

  // A GEMV batch over activation rows x [M, ldx], RMS-normalised by norm_w (null: as they are).
  static GemvBatch batch(const float* xin, int ldx, int M, const float* norm_w, float eps) {
    GemvBatch b;
    b.x = xin;
    b.ldx = ldx;
    b.M = M;
    b.norm_w = norm_w;
    b.norm_dim = norm_w ? ldx : 0;
    b.eps = eps;
    return b;
  }
  // Adds out[m, :] = x̂[m]·Wᵀ (SwiGLU with up non-null) to the batch.
  static void add(GemvBatch& b, const DevWeight& w, float* out, int ldo, const DevWeight* up = nullptr, bool acc = false) {
    if (b.njobs == kGemvBatchJobs) throw std::logic_error("GEMV batch full");
    GemvJob& j = b.jobs[b.njobs++];
    j.w = w;
    if (up) j.up = *up;
    j.out = out;
    j.ldo = ldo;
    j.accumulate = acc;
  }

  // Decode MoE in three launches: router logits + shared expert gate/up; routing + routed experts' gate/up; down
  // projections + weighted combine into h. Needs gate and up of a kind (shape and dtype) for the SwiGLU GEMVs.
  static bool same_kind(const DevWeight& a, const DevWeight& b) { return a.rows == b.rows && a.cols == b.cols && a.dtype == b.dtype; }
  bool moe_decode_fusable(const DevLayer& L) const {
    return L.is_moe && s.experts <= kMaxRouteExpertsHost && s.experts_per_tok <= kMaxRouteKHost && s.n_group <= 64 &&
           same_kind(L.expert_shape.gate, L.expert_shape.up) && (!L.has_shared || same_kind(L.shared.gate, L.shared.up));
  }
  static constexpr int kMaxRouteExpertsHost = 512, kMaxRouteKHost = 16;

  void moe_decode(cudaStream_t st, const DevLayer& L) {
    const int D = s.hidden, E = s.experts, K = s.experts_per_tok;
    const int Is = L.has_shared ? L.shared.gate.rows : 0;
    GemvBatch r = batch(h, D, 1, L.post_norm, s.rms_eps);
    add(r, L.router, rlogits, E);
    if (L.has_shared) add(r, L.shared.gate, u, Is, &L.shared.up);
    gemv_batch(st, r);
    GemvBatch e = batch(h, D, 1, L.post_norm, s.rms_eps);
    e.route.logits = rlogits;
    e.route.bias = L.router_bias;
    e.route.E = E;
    e.route.K = K;
    e.route.scoring = s.scoring;
    e.route.method = s.method;
    e.route.n_group = s.n_group;
    e.route.topk_group = s.topk_group;
    e.route.norm_topk = s.norm_topk;
    e.route.scale = s.routed_scale;
    const int I = L.expert_shape.gate.rows;
    add(e, L.expert_shape.gate, g, I);
    GemvJob& j = e.jobs[0];
    j.table = L.gate_table;
    j.up_table = L.up_table;
    j.slots = K;
    j.x_div = K;
    j.route_ids_out = rids;
    j.route_w_out = rwts;
    gemv_batch(st, e);
    MoeDownParams d;
    d.out = h;
    d.ldo = D;
    d.g = g;
    d.ldg = I;
    d.ids = rids;
    d.wts = rwts;
    d.table = L.down_table;
    d.shape = L.expert_shape.down;
    d.K = K;
    if (L.has_shared) {
      d.gs = u;
      d.ldgs = Is;
      d.shared_down = L.shared.down;
    }
    moe_down_combine(st, d, 1);
  }

  void lin(cudaStream_t st, float* out, int ldo, const float* xin, int ldx, int M, const DevWeight& w, bool acc) {
    linear(st, out, ldo, xin, ldx, M, w, acc, static_cast<GemmPrecision>(s.gemm_precision));
  }

  // g = silu(x·gate) · (x·up): one fused GEMV for decode-sized T, else two GEMMs and silu_mul.
  void swiglu(cudaStream_t st, float* out, const float* xin, int T, const DevMlp& m) {
    const int D = s.hidden, I = m.gate.rows;
    if (T <= 8 && m.up.dtype == m.gate.dtype && m.up.cols == m.gate.cols) {
      gemv_swiglu(st, out, I, xin, D, T, m.gate, m.up);
      return;
    }
    lin(st, out, I, xin, D, T, m.gate, false);
    lin(st, u, I, xin, D, T, m.up, false);
    silu_mul(st, out, out, u, static_cast<int64_t>(T) * I);
  }

  void moe(cudaStream_t st, const DevLayer& L, int T) {
    const int D = s.hidden, E = s.experts, K = s.experts_per_tok;
    lin(st, rlogits, E, x, D, T, L.router, false);
    moe_route(st, rids, rwts, rlogits, T, E, K, s.scoring, s.method, s.n_group, s.topk_group, L.router_bias, s.norm_topk,
              s.routed_scale);
    // Shared expert and routed experts accumulate straight into the residual stream h.
    if (L.has_shared) {
      const int I = L.shared.gate.rows;
      swiglu(st, g, x, T, L.shared);
      lin(st, h, D, g, I, T, L.shared.down, true);
    }
    const int I = L.expert_shape.gate.rows;
    const int slots = T * K;
    const int* pos_of_slot = nullptr;
    if (T == 1) {
      // Decode: each of the K slots is one expert GEMV, expert ids read on the device.
      grouped_gemv_swiglu(st, g, I, x, D, K, slots, L.gate_table, L.up_table, rids, L.expert_shape.gate);
      grouped_gemv(st, y, D, g, I, 1, slots, L.down_table, rids, L.expert_shape.down);
    } else {
      const int max_tiles = moe_permute(st, rids, T, K, E, counts, slot_rows, slot_pos, tiles, num_tiles);
      grouped_gemm(st, g, I, x, D, slot_rows, L.gate_table, tiles, num_tiles, max_tiles, L.expert_shape.gate, static_cast<GemmPrecision>(s.gemm_precision));
      grouped_gemm(st, u, I, x, D, slot_rows, L.up_table, tiles, num_tiles, max_tiles, L.expert_shape.up, static_cast<GemmPrecision>(s.gemm_precision));
      silu_mul(st, g, g, u, static_cast<int64_t>(slots) * I);
      grouped_gemm(st, y, D, g, I, nullptr, L.down_table, tiles, num_tiles, max_tiles, L.expert_shape.down, static_cast<GemmPrecision>(s.gemm_precision));
      pos_of_slot = slot_pos;
    }
    moe_combine(st, h, y, rwts, pos_of_slot, T, K, D, true);
  }

  void check_fits(int n) const {
    if (used + n > cap)
      throw std::runtime_error("context_overflow: " + std::to_string(used + n) + " tokens do not fit in the GPU context of " +
                               std::to_string(cap) + " tokens (" + std::to_string(used) + " cached + " +
                               std::to_string(n) + " new)");
  }

  void sync() { GLANCE_CUDA_CHECK(cudaStreamSynchronize(stream)); }

  // One token: graph replay (captured on first use of its bucket) or op by op; both enqueue identical work.
  void step(int32_t id, bool want_logits, float temperature, float uval) {
    const int start = used;
    ids_h[0] = id;
    pos_h[0] = start;
    *u_h = uval;
    const int S = start + 1;
    const bool dense_phase = !(uses_indexer() && S > s.index_topk);
    const int64_t bucket = dense_phase ? 0 : score_bound(S, 1);
    // temperature is a kernel argument: part of the key (quantised; the sampler reads u from device memory).
    const int64_t key = (bucket << 1 | (want_logits ? 1 : 0)) ^ (static_cast<int64_t>(std::lround(temperature * 1e4)) << 40);
    auto body = [&]() {
      GLANCE_CUDA_CHECK(cudaMemcpyAsync(ids_d, ids_h, (2 * static_cast<size_t>(kPrefillChunk) + 1) * sizeof(int), cudaMemcpyHostToDevice, stream));
      enqueue(1, start, false);
      sample(stream, token_d, logits, s.vocab, temperature, u_d);
      GLANCE_CUDA_CHECK(cudaMemcpyAsync(token_h, token_d, sizeof(int), cudaMemcpyDeviceToHost, stream));
      if (want_logits)
        GLANCE_CUDA_CHECK(cudaMemcpyAsync(logits_h, logits, static_cast<size_t>(s.vocab) * 4, cudaMemcpyDeviceToHost, stream));
    };
    if (!use_graph) {
      body();
    } else {
      auto it = graphs.find(key);
      if (it == graphs.end()) {
        // The graph is valid for every step of this bucket: no host value inside it depends on the exact position
        // (the enqueue above uses `start` only through score_bound and the dense/sparse phase, both fixed per bucket).
        GLANCE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
        try {
          body();
        } catch (...) {
          cudaGraph_t broken = nullptr;
          cudaStreamEndCapture(stream, &broken);
          if (broken) cudaGraphDestroy(broken);
          throw;
        }
        cudaGraph_t gdef = nullptr;
        GLANCE_CUDA_CHECK(cudaStreamEndCapture(stream, &gdef));
        cudaGraphExec_t exec = nullptr;
        const cudaError_t e = cudaGraphInstantiate(&exec, gdef, 0);
        if (e != cudaSuccess) {
          cudaGraphDestroy(gdef);
          GLANCE_CUDA_CHECK(e);
        }
        graph_defs.push_back(gdef);
        it = graphs.emplace(key, exec).first;
        captured++;
      }
      GLANCE_CUDA_CHECK(cudaGraphLaunch(it->second, stream));
    }
    sync();
    used = S;
  }

  void prefill(const int32_t* ids, int n, bool all_logits, float* out) {
    const int V = s.vocab;
    for (int c = 0; c < n; c += kPrefillChunk) {
      const int T = std::min(kPrefillChunk, n - c);
      for (int t = 0; t < T; t++) {
        ids_h[t] = ids[c + t];
        pos_h[t] = used + t;
      }
      GLANCE_CUDA_CHECK(cudaMemcpyAsync(ids_d, ids_h, T * sizeof(int), cudaMemcpyHostToDevice, stream));
      GLANCE_CUDA_CHECK(cudaMemcpyAsync(pos_d, pos_h, T * sizeof(int), cudaMemcpyHostToDevice, stream));
      enqueue(T, used, all_logits);
      const bool last = c + T == n;
      if (all_logits) {
        GLANCE_CUDA_CHECK(cudaMemcpyAsync(out + static_cast<size_t>(c) * V, logits, static_cast<size_t>(T) * V * 4,
                                          cudaMemcpyDeviceToHost, stream));
      } else if (last) {
        GLANCE_CUDA_CHECK(cudaMemcpyAsync(out, logits, static_cast<size_t>(V) * 4, cudaMemcpyDeviceToHost, stream));
      }
      sync();  // the pinned id/position buffers are reused by the next chunk
      used += T;
    }
  }
};

GpuSequence::GpuSequence(GpuModel& model, int capacity) : impl_(new GpuSequenceImpl(*model.impl(), capacity)) {
  GpuModelImpl& m = *model.impl();
  if (capacity < 1) throw std::invalid_argument("GpuSequence: capacity must be ≥ 1");
  const int64_t need = model.bytes_per_token() * capacity + model.sequence_scratch_bytes(capacity);
  if (m.used + need > m.budget) {
    const int64_t room = m.budget - m.used - model.sequence_scratch_bytes(capacity);
    const int64_t fits = room > 0 ? room / model.bytes_per_token() : 0;
    throw std::runtime_error("context_overflow: a context of " + std::to_string(capacity) + " tokens needs " + mib(need) +
                             " of GPU memory, " + mib(m.budget - m.used) + " of the " + mib(m.budget) +
                             " budget is free (room for about " + std::to_string(fits) +
                             " tokens); raise --gpu-memory or ask for a shorter context");
  }
  impl_->allocate();
}

GpuSequence::~GpuSequence() = default;
int GpuSequence::length() const { return impl_->used; }
int GpuSequence::capacity() const { return impl_->cap; }

void GpuSequence::forward(const int32_t* ids, int n, bool all_logits, float* logits) {
  GpuSequenceImpl& q = *impl_;
  if (n <= 0) throw std::invalid_argument("forward: no input ids");
  for (int i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= q.s.vocab)
      throw std::invalid_argument("token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                                  " is outside the vocabulary (0.." + std::to_string(q.s.vocab - 1) + ")");
  q.check_fits(n);
  if (n == 1) {
    q.step(ids[0], true, 0.0f, 0.0f);
    std::copy(q.logits_h, q.logits_h + q.s.vocab, logits);
    return;
  }
  q.prefill(ids, n, all_logits, logits);
}

int GpuSequence::step_sample(int32_t id, float temperature, float u, float* logits) {
  GpuSequenceImpl& q = *impl_;
  if (id < 0 || id >= q.s.vocab) throw std::invalid_argument("token id " + std::to_string(id) + " is outside the vocabulary");
  q.check_fits(1);
  q.step(id, logits != nullptr, temperature, u);
  if (logits) std::copy(q.logits_h, q.logits_h + q.s.vocab, logits);
  return *q.token_h;
}

void GpuSequence::truncate(int length) {
  if (length < 0 || length > impl_->used)
    throw std::invalid_argument("cannot truncate a sequence of " + std::to_string(impl_->used) + " tokens to " +
                                std::to_string(length));
  impl_->used = length;
}

void GpuSequence::copy_prefix_from(GpuSequence& src, int length) {
  GpuSequenceImpl& a = *impl_;
  GpuSequenceImpl& b = *src.impl_;
  if (&a.m != &b.m) throw std::invalid_argument("copyPrefixFrom: the source sequence belongs to another model");
  if (length < 0 || length > b.used)
    throw std::invalid_argument("copyPrefixFrom: the source holds " + std::to_string(b.used) + " tokens, asked for " +
                                std::to_string(length));
  if (length > a.cap)
    throw std::runtime_error("context_overflow: a prefix of " + std::to_string(length) +
                             " tokens does not fit in this sequence's GPU context of " + std::to_string(a.cap) + " tokens");
  if (&a == &b) {
    a.used = length;
    return;
  }
  b.sync();
  const size_t latent = static_cast<size_t>(a.s.kv_lora + a.s.rope), n = static_cast<size_t>(length);
  for (size_t l = 0; l < a.kv.size(); l++) {
    GLANCE_CUDA_CHECK(cudaMemcpyAsync(a.kv[l], b.kv[l], n * latent * (a.s.kv_cache_fp32 ? 4 : 2), cudaMemcpyDeviceToDevice, a.stream));
    const size_t Di = static_cast<size_t>(a.s.index_dim);
    if (l < a.ix8.size()) {
      GLANCE_CUDA_CHECK(cudaMemcpyAsync(a.ix8[l], b.ix8[l], n * Di, cudaMemcpyDeviceToDevice, a.stream));
      GLANCE_CUDA_CHECK(cudaMemcpyAsync(a.ixscale[l], b.ixscale[l], n * 4, cudaMemcpyDeviceToDevice, a.stream));
    }
    if (l < a.ixf32.size())
      GLANCE_CUDA_CHECK(cudaMemcpyAsync(a.ixf32[l], b.ixf32[l], n * Di * 4, cudaMemcpyDeviceToDevice, a.stream));
  }
  a.sync();
  a.used = length;
}

void GpuSequence::set_use_graph(bool on) { impl_->use_graph = on; }
int GpuSequence::graphs_captured() const { return impl_->captured; }

}  // namespace cuda
}  // namespace glance
