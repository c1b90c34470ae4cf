// The whole forward pass of a DeepSeek-V3.2-style model on one GPU (the CUDA twin of sidecar/src/engine/model.ts).
//
// GpuModel: the weights, uploaded once from the host tensors (views into the mmapped checkpoint) in their checkpoint
// dtype (FP8 stays e4m3 + block scales), within a device-memory budget.
// GpuSequence: one sequence's latent KV cache (bf16 rows [kvLora | k_pe]) and lightning-indexer key cache (e4m3 rows
// + one fp32 power-of-two scale: D + 4 bytes per token, or fp32 rows), preallocated for its capacity from the same
// budget, plus its activation scratch. Prompts run in chunks of kPrefillChunk tokens; a single-token step is captured
// as a CUDA graph (one launch per token; re-captured when the context crosses a bucket boundary, since grid sizes
// depend on the context bound).
//
// Plain C++ (no CUDA types): includable from the g++-compiled N-API glue.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../cpu/dtype.h"

namespace glance {
namespace cuda {

struct HostMlp {
  Weight gate, up, down;
};

struct HostLayer {
  std::vector<float> input_norm, post_attention_norm;
  bool has_q_lora = false;
  Weight q_proj, q_a, q_b;  // q_proj without q-LoRA; q_a / q_b with
  std::vector<float> q_a_norm;
  Weight kv_a, kv_b, o_proj;
  std::vector<float> kv_a_norm;
  bool has_indexer = false;
  Weight ix_wq_b, ix_wk, ix_weights_proj;
  std::vector<float> ix_k_norm_weight, ix_k_norm_bias;
  bool is_moe = false;
  HostMlp dense;  // !is_moe
  Weight router;
  std::vector<float> router_bias;  // empty: none
  std::vector<HostMlp> experts;
  bool has_shared = false;
  HostMlp shared;
};

struct ModelSpec {
  int vocab = 0, hidden = 0, heads = 0, q_lora = 0, kv_lora = 0, nope = 0, rope = 0, v_head = 0;
  int index_heads = 0, index_dim = 0, index_topk = 0;  // 0: no indexer
  int experts = 0, experts_per_tok = 0, n_group = 1, topk_group = 1;
  int scoring = 0;  // 0 sigmoid, 1 softmax
  int method = 0;   // 0 greedy, 1 group_limited_greedy, 2 noaux_tc
  bool norm_topk = true;
  float routed_scale = 1.0f, rms_eps = 1e-6f, softmax_scale = 1.0f, rope_attention_factor = 1.0f;
  std::vector<float> inv_freq;
  bool sparse = true;       // DSA top-k where the model has an indexer
  bool indexer_fp8 = true;  // 132-byte FP8 key cache, else fp32 keys
  bool kv_cache_fp32 = false;  // latent cache rows in fp32 (CPU parity) instead of bf16
  int gemm_precision = 1;      // GemmPrecision: 0 bf16 operands, 1 split bf16 (fp32-grade)
  // 3a's tuned attention kernels (kernels/cuda/topk.cu multi-block exact top-k; sparse_mla.cu tensor-core sparse MLA
  // where the shape is supported and the cache is bf16) instead of the generic ones of model_ops.cu.
  bool tuned_attention = true;
  int max_positions = 0;
  std::vector<HostLayer> layers;
  Weight embed, lm_head;
  std::vector<float> final_norm;
  int64_t budget_bytes = 0;  // device-memory budget for weights + caches + scratch; 0: 90% of free memory
};

class GpuModelImpl;
class GpuSequenceImpl;

class GpuModel {
 public:
  // Uploads every weight; throws std::runtime_error naming the tensor / the budget on failure (nothing leaks).
  // progress(done, total) after each layer.
  GpuModel(const ModelSpec& spec, void (*progress)(void*, int, int), void* progress_ctx);
  ~GpuModel();
  GpuModel(const GpuModel&) = delete;
  GpuModel& operator=(const GpuModel&) = delete;

  std::string describe() const;
  int64_t weight_bytes() const;
  int64_t budget_bytes() const;
  int64_t used_bytes() const;
  // Device bytes one more cached token costs (all layers), and the fixed scratch of a sequence.
  int64_t bytes_per_token() const;
  int64_t sequence_scratch_bytes(int capacity) const;
  GpuModelImpl* impl() { return impl_.get(); }

 private:
  std::unique_ptr<GpuModelImpl> impl_;
};

class GpuSequence {
 public:
  // Allocates caches for `capacity` tokens; throws a std::runtime_error that says how many tokens the budget holds
  // when they do not fit.
  GpuSequence(GpuModel& model, int capacity);
  ~GpuSequence();
  GpuSequence(const GpuSequence&) = delete;
  GpuSequence& operator=(const GpuSequence&) = delete;

  int length() const;
  int capacity() const;
  // Runs ids after the cached tokens; logits [n, vocab] (all_logits) or [1, vocab] (last position) into `logits`.
  void forward(const int32_t* ids, int n, bool all_logits, float* logits);
  // One token through the forward pass and the sampler on the device: returns the next token (argmax when
  // temperature ≤ 0, else a draw with the uniform u). logits (nullable) receives [vocab].
  int step_sample(int32_t id, float temperature, float u, float* logits);
  void truncate(int length);
  // Replaces this sequence's cache with the first `length` tokens of `src` (same model): device-to-device copies.
  void copy_prefix_from(GpuSequence& src, int length);
  // Single-token steps as CUDA graphs (default) or op by op (for the graph-equality test).
  void set_use_graph(bool on);
  // Graphs captured so far (for tests / describe).
  int graphs_captured() const;

 private:
  std::unique_ptr<GpuSequenceImpl> impl_;
};

// Size of the prompt chunks (the indexer's [chunk, context] score matrix is the largest scratch).
constexpr int kPrefillChunk = 256;

}  // namespace cuda
}  // namespace glance
