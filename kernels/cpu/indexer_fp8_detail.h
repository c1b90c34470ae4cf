// The FP8 lightning-indexer scoring of indexer_fp8.cc cut into its two steps, so that another op can drive the key
// chunks itself (indexer_topk.cc scores a chunk and folds it into the top-k histogram while it is in L1).
// Internal to kernels/cpu.
#pragma once

#include <cstdint>
#include <vector>

namespace glance {

constexpr int64_t kKeyChunk = 48;    // keys per work item (a multiple of the 8-key groups and 6-key tiles)
constexpr int64_t kTokenBlock = 16;  // query tokens sharing one decode of a key chunk

// ---- AMX body (indexer_fp8_amx.cc): up to 16 heads, D = 64 or 128, on CPUs with AMX-BF16 + AVX-512 VBMI ----

// The AMX body can score this shape here (CPU, OS permission, GLANCE_SIMD not forcing avx2/scalar).
bool amx_indexer_usable(int64_t Hi, int64_t D);

// One token's query as AMX B tiles (bf16, columns in the A tiles' order) and its head weights, padded to hp heads.
struct alignas(64) AmxQuery {
  uint16_t b[4][16][32];
  float wpat[16];  // weight of head (lane % hp), 0 for padding heads
  int hp;          // heads padded to a power of two <= 16
};
void amx_prepare_query(AmxQuery& aq, const uint8_t* q, const float* weights, int64_t Hi, int64_t D);

// rows [n][D] bf16 (the A tiles' column order) = keys [n][D] e4m3, n <= kKeyChunk.
void amx_decode_keys(uint16_t* rows, const uint8_t* keys, int64_t n, int64_t D);

// out[j] = ks[j] * sum_h w[h] relu(q_h . key_j) for j < n <= kKeyChunk; rows has kKeyChunk finite rows.
void amx_scores(float* out, const uint16_t* rows, int64_t n, const AmxQuery& aq, int64_t D, const float* ks);

// out[j] = the same scores for keys [0, n) (any n) of one token, decoded and scored 48 at a time in one pass with the
// tile configuration and the query's tiles loaded once: the decode step's hot loop (no per-chunk set-up).
void amx_score_keys(float* out, const uint8_t* keys, const float* ks, int64_t n, const AmxQuery& aq, int64_t D);

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
  // A one-token block (TB == 1): the scores of keys [s0, s1) into out[s], s0 a chunk start, s1 <= need(). Scores
  // the range in one pass where the mode allows (AMX), else chunk by chunk.
  void score_keys(int64_t s0, int64_t s1, float* out) const;

 private:
  enum class Mode { Scalar, KeysInLanes, HeadsInLanes, Amx };
  const uint8_t* keys_;
  const float* key_scales_;
  const int32_t* positions_;  // of the block's first token
  int64_t TB_, S_, Hi_, D_;
  Mode mode_;
  int64_t Hq_, Dq_, Dp_, Hp_, qsize_, wsize_, qstride_, need_;
  std::vector<float> qstore_, wbuf_;
  std::vector<AmxQuery> amx_;  // per token, Mode::Amx only
  float* qbase_;
};

}  // namespace glance
