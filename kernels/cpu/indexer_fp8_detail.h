// The FP8 lightning-indexer scoring of indexer_fp8.cc cut into its two steps, so that another op can drive the key
// chunks itself (indexer_topk.cc scores a chunk and folds it into the top-k histogram while it is in L1).
// Internal to kernels/cpu.
#pragma once

#include <cstdint>
#include <vector>

namespace glance {

constexpr int64_t kKeyChunk = 48;    // keys per work item (a multiple of the 8-key groups and 6-key tiles)
constexpr int64_t kTokenBlock = 16;  // query tokens sharing one decode of a key chunk

// Tokens [t0, t0 + TB) of an indexer_scores_fp8 call (TB <= kTokenBlock) with their queries converted once.
class Fp8IndexerBlock {
 public:
  Fp8IndexerBlock(const uint8_t* q, const float* weights, const uint8_t* keys, const float* key_scales, int64_t t0,
                  int64_t TB, int64_t S, int64_t Hi, int64_t D, const int32_t* positions);

  // Key chunks of kKeyChunk keys covering [0, S).
  int64_t chunks() const;
  // Keys [0, need) are attended by some token of the block.
  int64_t need() const { return need_; }
  // A size of the work, for threads_for.
  int64_t work() const;
  // The scores of key chunk ch for every token i of the block: out[i * ldo + s] for s in the chunk (indexer_scores_fp8's
  // values, -inf past the token's position). Thread-safe (thread-local scratch).
  void score_chunk(int64_t ch, float* out, int64_t ldo) const;

 private:
  enum class Mode { Scalar, KeysInLanes, HeadsInLanes };
  const uint8_t* keys_;
  const float* key_scales_;
  const int32_t* positions_;  // of the block's first token
  int64_t TB_, S_, Hi_, D_;
  Mode mode_;
  int64_t Hq_, Dq_, Dp_, Hp_, qsize_, wsize_, qstride_, need_;
  std::vector<float> qstore_, wbuf_;
  float* qbase_;
};

}  // namespace glance
