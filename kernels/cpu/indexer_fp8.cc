// Lightning-indexer scores over the FP8 key cache (DeepGEMM fp8_mqa_logits contract):
//   out[t,s] = keyScales[s] * sum_h weights[t,h] * relu(sum_d e4m3(q[t,h,d]) * e4m3(keys[s,d]))
// for s <= positions[t] (and s < S), -inf after. q [T, Hi, D], keys [S, D] (rows of a longer cache are fine).
//
// The decode step reads the whole key cache of a layer once per token, so each key is decoded once and reused for
// every head (and every token of a block): work items are (chunk of kKeyChunk keys, block of up to kTokenBlock
// query tokens); T = 1 splits the keys into one contiguous range per thread. q is converted to fp32 once per token
// block, into the layout the compute loop wants. Only keys some token of the block attends are decoded.
//
// AVX2 decode: e4m3 byte b -> f16 bits (b & 0x80) << 8 | (b & 0x7f) << 7, which is the value times 2^-8 for every
// normal and subnormal code, then F16C to fp32 (decode32_e4m3_f16_nonan). The 2^8 is folded into the fp32 copy of
// q (decoded exactly from a table, times 2^8, exact), so that every product q*k is the exact product of the two
// e4m3 values, as in the scalar body. The NaN codes (0x7F, 0xFF) are not kept NaN on this path: the indexer cache
// never holds them (quantizeFp8Rows saturates to +-448), and the result for a q or key with a NaN code is
// unspecified.
//
// Compute, AVX2, Hi <= 8 (the small indexers, e.g. Hi = 4): keys in lanes. 8 keys x 32 columns are transposed as
// bytes (3 unpack stages) and decoded, giving for each column a vector of the 8 keys' values, which is FMA'd
// against q[h][column] (pre-broadcast to 8 lanes, a memory operand) into one accumulator per head (two, for even
// and odd columns, when Hi <= 4). No horizontal reductions: the epilogue is relu x weight summed over heads in
// lanes, times the 8 key scales, one store. T = 1 decodes straight from the cache bytes in registers; a block of
// several tokens decodes each group of 8 keys once into a transposed [D][8] buffer.
// Hi > 8 (DeepSeek: 64): heads in lanes. Keys are decoded row-major into a buffer; q[t] is a [D][Hp] panel (Hp = Hi
// rounded up to 8, zero padded); tiles of 6 keys x 16 heads broadcast the key elements against the panel's rows
// (FMA bound), and the epilogue folds relu x weight into one 8-lane running sum per key, reduced once at the end.
// fp32 accumulation everywhere; the key scale multiplies the head sum last.
// Up to 16 heads with D = 64 or 128 on a CPU with AMX-BF16 (+ AVX-512 VBMI): the AMX body of indexer_fp8_amx.cc
// instead (keys decoded to bf16 rows, 16 keys x 32 columns x 16 heads per tile instruction).
#include <algorithm>
#include <limits>
#include <vector>

#include "dequant_simd.h"
#include "dtype.h"
#include "indexer_fp8_detail.h"
#include "kernels.h"
#include "simd.h"
#include "thread_pool.h"

namespace glance {

namespace {

constexpr int64_t kTileSlack = 6;    // decoded rows past the chunk, for a 6-key tile running past the last key
constexpr int64_t kLaneHeads = 8;    // AVX2: up to 8 heads, keys in lanes; more, heads in lanes

// p rounded up to a multiple of 64 bytes (the vector behind it has 15 floats to spare).
inline float* align64(float* p) {
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + 63) & ~static_cast<uintptr_t>(63));
}

// A thread-local buffer of at least n floats, 64-byte aligned.
float* scratch(std::vector<float>& v, size_t n) {
  if (v.size() < n + 16) v.assign(n + 16, 0.0f);  // zeros: the slack rows must hold finite numbers
  return align64(v.data());
}

// ---- scalar -----------------------------------------------------------------------------------------------

// Keys [0, n) of a chunk (rows of D, decoded exactly) for one token: q [Hi][D] exact, w [Hi].
void scores_scalar(float* out, const float* kb, int64_t n, const float* q, const float* w, int64_t Hi, int64_t D,
                   const float* ks) {
  for (int64_t j = 0; j < n; j++) {
    const float* k = kb + j * D;
    float total = 0.0f;
    for (int64_t h = 0; h < Hi; h++) {
      const float* qh = q + h * D;
      float acc[4] = {0, 0, 0, 0};
      int64_t d = 0;
      for (; d + 4 <= D; d += 4)
        for (int u = 0; u < 4; u++) acc[u] += qh[d + u] * k[d + u];
      float dot = (acc[0] + acc[2]) + (acc[1] + acc[3]);
      for (; d < D; d++) dot += qh[d] * k[d];
      total += w[h] * std::max(dot, 0.0f);
    }
    out[j] = total * ks[j];
  }
}

#if GLANCE_X86
// ---- AVX2 decode ------------------------------------------------------------------------------------------

// dst[0, Dp) = key row times 2^-8 (zeros in [D, Dp)).
GLANCE_AVX2 inline void decode_key_avx2(float* dst, const uint8_t* src, int64_t D, int64_t Dp) {
  int64_t d = 0;
  for (; d + 32 <= D; d += 32) {
    __m256 v0, v1, v2, v3;
    decode32_e4m3_f16_nonan(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + d)), v0, v1, v2, v3);
    _mm256_storeu_ps(dst + d, v0);
    _mm256_storeu_ps(dst + d + 8, v1);
    _mm256_storeu_ps(dst + d + 16, v2);
    _mm256_storeu_ps(dst + d + 24, v3);
  }
  for (; d + 8 <= D; d += 8) {
    const __m128i b = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + d)));
    const __m128i h = _mm_and_si128(_mm_slli_epi16(b, 7), _mm_set1_epi16(static_cast<short>(0xBFFF)));
    _mm256_storeu_ps(dst + d, _mm256_cvtph_ps(h));
  }
  for (; d < D; d++) dst[d] = e4m3_to_f32(src[d]) * (1.0f / kE4M3F16Fix);
  for (; d < Dp; d++) dst[d] = 0.0f;
}

// ---- AVX2, Hi <= 8: keys in lanes ----------------------------------------------------------------------------

// 8 keys x 32 columns (rows of ld bytes at k) transposed as bytes: three unpack stages (bytes, words, dwords)
// turn the 8 rows into g[gi] = { column 2gi: keys 0..7, column 2gi+1: keys 0..7 | the same for columns 16+2gi,
// 17+2gi }, so that decode32_e4m3_f16_nonan(g[gi]) yields the 8 keys of columns 2gi, 2gi+1, 16+2gi, 17+2gi.
GLANCE_AVX2 inline void transpose8x32(const uint8_t* k, int64_t ld, __m256i (&g)[8]) {
  __m256i r[8], s[8], t[8];
  for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(k + i * ld));
  for (int i = 0; i < 4; i++) {  // word (key 2i, key 2i+1) per column
    s[2 * i] = _mm256_unpacklo_epi8(r[2 * i], r[2 * i + 1]);      // columns 0-7 | 16-23
    s[2 * i + 1] = _mm256_unpackhi_epi8(r[2 * i], r[2 * i + 1]);  // columns 8-15 | 24-31
  }
  for (int i = 0; i < 2; i++)  // dword (keys 4i .. 4i+3) per column
    for (int hl = 0; hl < 2; hl++) {
      t[4 * i + 2 * hl] = _mm256_unpacklo_epi16(s[4 * i + hl], s[4 * i + 2 + hl]);
      t[4 * i + 2 * hl + 1] = _mm256_unpackhi_epi16(s[4 * i + hl], s[4 * i + 2 + hl]);
    }  // t[j] (keys 0-3), t[4+j] (keys 4-7): columns 4j .. 4j+3 | 16+4j .. 19+4j
  for (int j = 0; j < 4; j++) {  // qword (keys 0..7) per column
    g[2 * j] = _mm256_unpacklo_epi32(t[j], t[4 + j]);
    g[2 * j + 1] = _mm256_unpackhi_epi32(t[j], t[4 + j]);
  }
}

// Running sums over heads for 8 keys in lanes: A = 2 accumulator sets (even / odd column) when there are at most
// 4 heads, so that at least 8 FMA chains are in flight.
template <int H>
struct LaneAcc {
  static constexpr int A = H <= 4 ? 2 : 1;
  __m256 acc[A][H];
};

// acc[.][h] += v_c * qt[h][c] for the four decoded columns of one g (c0, c0 + 1, c0 + 16, c0 + 17).
template <int H>
GLANCE_AVX2 inline void lane_fma4(LaneAcc<H>& a, __m256 v0, __m256 v1, __m256 v2, __m256 v3, const float* qc,
                                  int64_t hstride) {
  constexpr int A = LaneAcc<H>::A;
  for (int h = 0; h < H; h++) {
    const float* qh = qc + h * hstride;
    a.acc[0][h] = _mm256_fmadd_ps(v0, _mm256_loadu_ps(qh), a.acc[0][h]);
    a.acc[A - 1][h] = _mm256_fmadd_ps(v1, _mm256_loadu_ps(qh + 8), a.acc[A - 1][h]);
    a.acc[0][h] = _mm256_fmadd_ps(v2, _mm256_loadu_ps(qh + 16 * 8), a.acc[0][h]);
    a.acc[A - 1][h] = _mm256_fmadd_ps(v3, _mm256_loadu_ps(qh + 17 * 8), a.acc[A - 1][h]);
  }
}

// sum_h w[h] * relu(dot_h) for the 8 keys in lanes.
template <int H>
GLANCE_AVX2 inline __m256 lane_epilogue(const LaneAcc<H>& a, const float* w) {
  const __m256 z = _mm256_setzero_ps();
  __m256 tot = z;
  for (int h = 0; h < H; h++) {
    const __m256 dot = LaneAcc<H>::A == 2 ? _mm256_add_ps(a.acc[0][h], a.acc[LaneAcc<H>::A - 1][h]) : a.acc[0][h];
    tot = _mm256_fmadd_ps(_mm256_max_ps(dot, z), _mm256_set1_ps(w[h]), tot);
  }
  return tot;
}

template <int H>
GLANCE_AVX2 inline void lane_zero(LaneAcc<H>& a) {
  for (int i = 0; i < LaneAcc<H>::A; i++)
    for (int h = 0; h < H; h++) a.acc[i][h] = _mm256_setzero_ps();
}

// Scores of 8 keys straight from their bytes (rows of ld >= Dq bytes at k; Dq % 32 == 0). qt: [H][Dq][8], q[h][c]
// times 2^8 repeated in 8 lanes, zero for columns >= D. kDq > 0: Dq is that constant (fully unrolled, ~10% faster
// for the common D = 64 and 128).
template <int H, int kDq = 0>
GLANCE_AVX2 inline __m256 group_scores_bytes(const uint8_t* k, int64_t ld, int64_t dq, const float* qt,
                                             const float* w) {
  const int64_t Dq = kDq > 0 ? kDq : dq;
  LaneAcc<H> a;
  lane_zero(a);
#pragma GCC unroll 4
  for (int64_t d = 0; d < Dq; d += 32) {
    __m256i g[8];
    transpose8x32(k + d, ld, g);
#pragma GCC unroll 8
    for (int gi = 0; gi < 8; gi++) {
      __m256 v0, v1, v2, v3;
      decode32_e4m3_f16_nonan(g[gi], v0, v1, v2, v3);
      lane_fma4(a, v0, v1, v2, v3, qt + (d + 2 * gi) * 8, Dq * 8);
    }
  }
  return lane_epilogue(a, w);
}

// 8 keys decoded into kt [Dq][8] (column-major: the 8 keys of column c at kt + 8c), for reuse by several tokens.
GLANCE_AVX2 inline void decode_group(float* kt, const uint8_t* k, int64_t ld, int64_t Dq) {
  for (int64_t d = 0; d < Dq; d += 32) {
    __m256i g[8];
    transpose8x32(k + d, ld, g);
    for (int gi = 0; gi < 8; gi++) {
      __m256 v0, v1, v2, v3;
      decode32_e4m3_f16_nonan(g[gi], v0, v1, v2, v3);
      float* o = kt + (d + 2 * gi) * 8;
      _mm256_storeu_ps(o, v0);
      _mm256_storeu_ps(o + 8, v1);
      _mm256_storeu_ps(o + 16 * 8, v2);
      _mm256_storeu_ps(o + 17 * 8, v3);
    }
  }
}

// Scores of 8 keys already decoded by decode_group.
template <int H>
GLANCE_AVX2 inline __m256 group_scores_decoded(const float* kt, int64_t Dq, const float* qt, const float* w) {
  constexpr int A = LaneAcc<H>::A;
  LaneAcc<H> a;
  lane_zero(a);
  for (int64_t d = 0; d < Dq; d += 2) {
    const __m256 v0 = _mm256_loadu_ps(kt + d * 8), v1 = _mm256_loadu_ps(kt + d * 8 + 8);
    for (int h = 0; h < H; h++) {
      const float* qh = qt + (h * Dq + d) * 8;
      a.acc[0][h] = _mm256_fmadd_ps(v0, _mm256_loadu_ps(qh), a.acc[0][h]);
      a.acc[A - 1][h] = _mm256_fmadd_ps(v1, _mm256_loadu_ps(qh + 8), a.acc[A - 1][h]);
    }
  }
  return lane_epilogue(a, w);
}

// Writes out[i] = tot[i] * ks[i] for i < m (m <= 8).
GLANCE_AVX2 inline void store_scores(float* out, __m256 tot, const float* ks, int64_t m) {
  if (m == 8) {
    _mm256_storeu_ps(out, _mm256_mul_ps(tot, _mm256_loadu_ps(ks)));
    return;
  }
  alignas(32) float r[8];
  _mm256_store_ps(r, tot);
  for (int64_t i = 0; i < m; i++) out[i] = r[i] * ks[i];
}

// Keys [0, n) (rows of D bytes at keys) for one token, straight from the bytes. Groups that would read past a key
// row (D % 32 != 0) or past the last key go through pad, a zeroed [8][Dq] copy.
template <int H>
GLANCE_AVX2 void scores_lanes_bytes(float* out, const uint8_t* keys, int64_t n, int64_t D, int64_t Dq,
                                    const float* qt, const float* w, const float* ks, uint8_t* pad) {
  int64_t j = 0;
  if (D == 64) {
    for (; j + 8 <= n; j += 8) store_scores(out + j, group_scores_bytes<H, 64>(keys + j * D, D, Dq, qt, w), ks + j, 8);
  } else if (D == 128) {
    for (; j + 8 <= n; j += 8) store_scores(out + j, group_scores_bytes<H, 128>(keys + j * D, D, Dq, qt, w), ks + j, 8);
  } else if (D == Dq) {
    for (; j + 8 <= n; j += 8) store_scores(out + j, group_scores_bytes<H>(keys + j * D, D, Dq, qt, w), ks + j, 8);
  }
  for (; j < n; j += 8) {
    const int64_t m = std::min<int64_t>(8, n - j);
    std::fill(pad, pad + 8 * Dq, uint8_t{0});
    for (int64_t i = 0; i < m; i++) std::copy(keys + (j + i) * D, keys + (j + i + 1) * D, pad + i * Dq);
    store_scores(out + j, group_scores_bytes<H>(pad, Dq, Dq, qt, w), ks + j, m);
  }
}

// Keys [0, m) of a chunk decoded by decode_group (groups of 8 at kt + 8 * Dq * group) for one token.
template <int H>
GLANCE_AVX2 void scores_lanes_decoded(float* out, const float* kt, int64_t m, int64_t Dq, const float* qt,
                                      const float* w, const float* ks) {
  for (int64_t j = 0; j < m; j += 8)
    store_scores(out + j, group_scores_decoded<H>(kt + j * Dq, Dq, qt, w), ks + j, std::min<int64_t>(8, m - j));
}

using LanesBytesFn = void (*)(float*, const uint8_t*, int64_t, int64_t, int64_t, const float*, const float*,
                              const float*, uint8_t*);
using LanesDecodedFn = void (*)(float*, const float*, int64_t, int64_t, const float*, const float*, const float*);

template <int H>
constexpr LanesBytesFn lanes_bytes_fn() {
  return scores_lanes_bytes<H>;
}
template <int H>
constexpr LanesDecodedFn lanes_decoded_fn() {
  return scores_lanes_decoded<H>;
}
constexpr LanesBytesFn kLanesBytes[9] = {nullptr, lanes_bytes_fn<1>(), lanes_bytes_fn<2>(), lanes_bytes_fn<3>(),
                                         lanes_bytes_fn<4>(), lanes_bytes_fn<5>(), lanes_bytes_fn<6>(),
                                         lanes_bytes_fn<7>(), lanes_bytes_fn<8>()};
constexpr LanesDecodedFn kLanesDecoded[9] = {nullptr, lanes_decoded_fn<1>(), lanes_decoded_fn<2>(),
                                             lanes_decoded_fn<3>(), lanes_decoded_fn<4>(), lanes_decoded_fn<5>(),
                                             lanes_decoded_fn<6>(), lanes_decoded_fn<7>(), lanes_decoded_fn<8>()};

// ---- AVX2, Hi > 8: heads in lanes ---------------------------------------------------------------------------

// tot[i] += sum over NV*8 heads of w[h] * relu(q[:, h] . k_i) for the MR keys at kb (rows of Dp); the panel qp is
// [D][Hp] at the tile's first head.
template <int MR, int NV>
GLANCE_AVX2 inline void head_tile(__m256 (&tot)[MR], const float* kb, int64_t Dp, const float* qp, int64_t Hp,
                                  int64_t D, const float* wp) {
  __m256 acc[MR][NV];
  for (int i = 0; i < MR; i++)
    for (int v = 0; v < NV; v++) acc[i][v] = _mm256_setzero_ps();
  for (int64_t d = 0; d < D; d++) {
    __m256 qv[NV];
    for (int v = 0; v < NV; v++) qv[v] = _mm256_loadu_ps(qp + d * Hp + 8 * v);
    for (int i = 0; i < MR; i++) {
      const __m256 kv = _mm256_broadcast_ss(kb + i * Dp + d);
      for (int v = 0; v < NV; v++) acc[i][v] = _mm256_fmadd_ps(kv, qv[v], acc[i][v]);
    }
  }
  const __m256 z = _mm256_setzero_ps();
  for (int v = 0; v < NV; v++) {
    const __m256 wv = _mm256_loadu_ps(wp + 8 * v);
    for (int i = 0; i < MR; i++) tot[i] = _mm256_fmadd_ps(_mm256_max_ps(acc[i][v], z), wv, tot[i]);
  }
}

// Keys [0, n) of the chunk for one token, 6 keys at a time (the last tile may read slack rows).
GLANCE_AVX2 void scores_heads_in_lanes(float* out, const float* kb, int64_t n, int64_t Dp, const float* qp,
                                       const float* wp, int64_t Hp, int64_t D, const float* ks) {
  constexpr int MR = 6;
  for (int64_t j = 0; j < n; j += MR) {
    __m256 tot[MR];
    for (int i = 0; i < MR; i++) tot[i] = _mm256_setzero_ps();
    const float* k = kb + j * Dp;
    int64_t h = 0;
    for (; h + 16 <= Hp; h += 16) head_tile<MR, 2>(tot, k, Dp, qp + h, Hp, D, wp + h);
    if (h < Hp) head_tile<MR, 1>(tot, k, Dp, qp + h, Hp, D, wp + h);
    const int m = static_cast<int>(std::min<int64_t>(MR, n - j));
    for (int i = 0; i < m; i++) out[j + i] = hsum256(tot[i]) * ks[j + i];
  }
}
#endif

}  // namespace

// ---- Fp8IndexerBlock ----------------------------------------------------------------------------------------

Fp8IndexerBlock::Fp8IndexerBlock(const uint8_t* q, const float* weights, const uint8_t* keys, const float* key_scales,
                                 int64_t t0, int64_t TB, int64_t S, int64_t Hi, int64_t D, const int32_t* positions)
    : keys_(keys), key_scales_(key_scales), positions_(positions + t0), TB_(TB), S_(S), Hi_(Hi), D_(D) {
  mode_ = !use_avx2()                    ? Mode::Scalar
          : amx_indexer_usable(Hi, D)     ? Mode::Amx
          : Hi <= kLaneHeads              ? Mode::KeysInLanes
                                          : Mode::HeadsInLanes;
  if (mode_ == Mode::Amx) {  // the query as B tiles; none of the fp32 copies below
    Hq_ = Dq_ = Dp_ = Hp_ = qsize_ = wsize_ = qstride_ = 0;
    qbase_ = nullptr;
    amx_.resize(static_cast<size_t>(TB));
    need_ = 0;
    for (int64_t i = 0; i < TB; i++) {
      amx_prepare_query(amx_[i], q + (t0 + i) * Hi * D, weights + (t0 + i) * Hi, Hi, D);
      need_ = std::max(need_, std::min<int64_t>(S, std::max<int64_t>(0, static_cast<int64_t>(positions_[i]) + 1)));
    }
    return;
  }
  // Per-token fp32 copy of q and the weights, in the layout of the mode:
  //   Scalar:       q [Hi][D] exact, w [Hi];
  //   KeysInLanes:  qt [Hq][Dq][8] = q * 2^8 repeated in 8 lanes, zero for columns >= D (Hq = max(Hi, 1) with a
  //                 zero weight for a missing head, Dq = D rounded up to 32), w [Hq];
  //   HeadsInLanes: panel [D][Hp] = q * 2^8 (Hp = Hi rounded up to 8, zero padded), w [Hp].
  Hq_ = std::max<int64_t>(Hi, 1);
  Dq_ = (D + 31) / 32 * 32;
  Dp_ = (D + 7) / 8 * 8;  // row stride of keys decoded row-major (HeadsInLanes)
  Hp_ = (Hi + 7) / 8 * 8;
  qsize_ = mode_ == Mode::Scalar ? Hi * D : mode_ == Mode::KeysInLanes ? Hq_ * Dq_ * 8 : D * Hp_;
  wsize_ = mode_ == Mode::Scalar ? Hi : mode_ == Mode::KeysInLanes ? Hq_ : Hp_;
  const float qmul = mode_ == Mode::Scalar ? 1.0f : kE4M3F16Fix;  // the decoded keys' 2^-8 folded into q
  // q copies on 64-byte boundaries (a 32-byte load split over two cache lines costs twice)
  qstride_ = (qsize_ + 15) / 16 * 16;
  qstore_.assign(static_cast<size_t>(TB * qstride_ + 16), 0.0f);
  wbuf_.assign(static_cast<size_t>(TB * wsize_), 0.0f);
  qbase_ = align64(qstore_.data());
  need_ = 0;  // keys [0, need) are attended by some token of the block
  for (int64_t i = 0; i < TB; i++) {
    const int64_t t = t0 + i;
    const uint8_t* qt = q + t * Hi * D;
    float* qf = qbase_ + i * qstride_;
    float* wf = wbuf_.data() + i * wsize_;
    for (int64_t h = 0; h < Hi; h++) {
      for (int64_t d = 0; d < D; d++) {
        const float v = e4m3_to_f32(qt[h * D + d]) * qmul;
        switch (mode_) {
          case Mode::Scalar: qf[h * D + d] = v; break;
          case Mode::KeysInLanes: std::fill(qf + (h * Dq_ + d) * 8, qf + (h * Dq_ + d) * 8 + 8, v); break;
          case Mode::HeadsInLanes: qf[d * Hp_ + h] = v; break;
          case Mode::Amx: break;  // returned above
        }
      }
      wf[h] = weights[t * Hi + h];
    }
    need_ = std::max(need_, std::min<int64_t>(S, std::max<int64_t>(0, static_cast<int64_t>(positions_[i]) + 1)));
  }
}

int64_t Fp8IndexerBlock::chunks() const { return (S_ + kKeyChunk - 1) / kKeyChunk; }

int64_t Fp8IndexerBlock::work() const { return need_ * TB_ * (Hi_ * D_ + D_) + TB_ * S_; }

// Key chunk ch for every token of the block.
void Fp8IndexerBlock::score_chunk(int64_t ch, float* out, int64_t ldo) const {
  static thread_local std::vector<float> keybuf;
  static thread_local std::vector<uint8_t> padbuf;
  static thread_local std::vector<uint16_t> amxrows;  // zero-filled: rows past n must be finite
  const float ninf = -std::numeric_limits<float>::infinity();
  const int64_t D = D_, Dq = Dq_, Dp = Dp_, TB = TB_;
  const int64_t s0 = ch * kKeyChunk, s1 = std::min(S_, s0 + kKeyChunk);
  const int64_t n = std::max<int64_t>(0, std::min(s1, need_) - s0);  // keys of the chunk anyone attends
  const uint8_t* kc = keys_ + s0 * D;
  float* kb = nullptr;
  uint8_t* pad = nullptr;
  if (n > 0) {
    if (mode_ == Mode::KeysInLanes) {
      if (padbuf.size() < static_cast<size_t>(8 * Dq)) padbuf.resize(static_cast<size_t>(8 * Dq));
      pad = padbuf.data();
    }
#if GLANCE_X86
    if (mode_ == Mode::KeysInLanes && TB > 1) {  // decode once for the block's tokens: groups of 8, [Dq][8]
      kb = scratch(keybuf, static_cast<size_t>(kKeyChunk * Dq));
      for (int64_t j = 0; j < n; j += 8) {
        const int64_t m = std::min<int64_t>(8, n - j);
        if (m == 8 && D == Dq) {
          decode_group(kb + j * Dq, kc + j * D, D, Dq);
        } else {
          std::fill(pad, pad + 8 * Dq, uint8_t{0});
          for (int64_t i = 0; i < m; i++) std::copy(kc + (j + i) * D, kc + (j + i + 1) * D, pad + i * Dq);
          decode_group(kb + j * Dq, pad, Dq, Dq);
        }
      }
    } else if (mode_ == Mode::HeadsInLanes) {  // decode once for all heads and tokens: rows of Dp
      kb = scratch(keybuf, static_cast<size_t>((kKeyChunk + kTileSlack) * Dp));
      for (int64_t j = 0; j < n; j++) decode_key_avx2(kb + j * Dp, kc + j * D, D, Dp);
    }
#endif
    if (mode_ == Mode::Amx) {  // decode once for the block's tokens
      if (amxrows.size() < static_cast<size_t>(kKeyChunk * D)) amxrows.assign(static_cast<size_t>(kKeyChunk * D), 0);
      amx_decode_keys(amxrows.data(), kc, n, D);
    }
    if (mode_ == Mode::Scalar) {
      kb = scratch(keybuf, static_cast<size_t>(kKeyChunk * D));
      for (int64_t j = 0; j < n * D; j++) kb[j] = e4m3_to_f32(kc[j]);
    }
  }
  for (int64_t i = 0; i < TB; i++) {
    float* o = out + i * ldo;
    const int64_t ve = std::max(s0, std::min<int64_t>(s1, static_cast<int64_t>(positions_[i]) + 1));
    const int64_t m = ve - s0;
    if (m > 0) {
      const float* qf = mode_ == Mode::Amx ? nullptr : qbase_ + i * qstride_;
      const float* wf = mode_ == Mode::Amx ? nullptr : wbuf_.data() + i * wsize_;
      const float* ks = key_scales_ + s0;
      switch (mode_) {
#if GLANCE_X86
        case Mode::KeysInLanes:
          if (TB == 1) kLanesBytes[Hq_](o + s0, kc, m, D, Dq, qf, wf, ks, pad);
          else kLanesDecoded[Hq_](o + s0, kb, m, Dq, qf, wf, ks);
          break;
        case Mode::HeadsInLanes: scores_heads_in_lanes(o + s0, kb, m, Dp, qf, wf, Hp_, D, ks); break;
#endif
        case Mode::Amx: amx_scores(o + s0, amxrows.data(), m, amx_[i], D, ks); break;
        default: scores_scalar(o + s0, kb, m, qf, wf, Hi_, D, ks); break;
      }
    }
    for (int64_t s = ve; s < s1; s++) o[s] = ninf;
  }
}

void Fp8IndexerBlock::score_keys(int64_t s0, int64_t s1, float* out) const {
  if (mode_ == Mode::Amx) {
    amx_score_keys(out + s0, keys_ + s0 * D_, key_scales_ + s0, s1 - s0, amx_[0], D_);
    return;
  }
  for (int64_t ch = s0 / kKeyChunk; ch * kKeyChunk < s1; ch++) score_chunk(ch, out, 0);
}

// out[t,s] = keyScales[s] * sum_h weights[t,h] * relu(e4m3(q[t,h]) . e4m3(keys[s])) for s <= positions[t], -inf
// after (q: [T, Hi, D] e4m3; weights: [T, Hi]; keys: [S, D] e4m3; keyScales: [S]; out: [T, S]).
void indexer_scores_fp8(float* out, const uint8_t* q, const float* weights, const uint8_t* keys,
                        const float* key_scales, int64_t T, int64_t S, int64_t Hi, int64_t D,
                        const int32_t* positions) {
  if (T <= 0 || S <= 0) return;
  for (int64_t tb = 0; tb < T; tb += kTokenBlock) {
    const int64_t TB = std::min(kTokenBlock, T - tb);
    const Fp8IndexerBlock block(q, weights, keys, key_scales, tb, TB, S, Hi, D, positions);
    float* o = out + tb * S;
    const int threads = threads_for(block.work(), 1 << 15);
    if (TB == T) {  // one block (decode, short prompts): equal contiguous ranges of keys per thread
      parallel_for(
          block.chunks(),
          [&](int64_t b, int64_t e) {
            for (int64_t ch = b; ch < e; ch++) block.score_chunk(ch, o, S);
          },
          threads);
    } else {  // prefill: causal rows make chunks unequal
      parallel_dynamic(block.chunks(), [&](int64_t ch) { block.score_chunk(ch, o, S); }, threads);
    }
  }
}

}  // namespace glance
