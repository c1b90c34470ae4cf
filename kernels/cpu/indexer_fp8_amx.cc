// AMX body of the FP8 lightning indexer (indexer_fp8.cc's contract) for up to 16 heads and D = 64 or 128: the
// small indexers of glance-tiny and the bench model (4 heads x 64), on CPUs with AMX-BF16 (Sapphire Rapids on).
//
// Why AMX: a decode step scores every cached key of every layer. With 4 heads a key's 64 e4m3 bytes are decoded
// for only 4 dot products, so the AVX2 body spends its time transposing and decoding bytes. Here a key row is
// decoded to bf16 in registers (two 128-entry byte tables, vpermi2b; every e4m3 value, subnormals included, is a
// normal bf16, so the decode is exact) and stored as a row of the A tile: no transposes. One tdpbf16ps multiplies
// 16 keys x 32 columns by the query's B tile (32 columns x up to 16 heads); products of two e4m3 values are exact,
// sums are fp32 (AMX's own order: results may differ from the AVX2 body in the last bits, as any two summation
// orders do). Hardware DAZ/FTZ of AMX cannot bite: no operand or product here is an fp32/bf16 subnormal.
//
// Column order: unpacking the low/high byte vectors interleaves within 128-bit lanes, so A tile c holds the key's
// columns in the order amx_column(c, pos) below; the query's B tiles are built in the same order (a dot product does
// not care about order as long as both sides agree).
//
// Tiles: B in tmm0..tmm(D/32 - 1) (loaded per call: they depend on the token), C in tmm4..tmm6 (3 groups of 16
// keys = one kKeyChunk), A in tmm7 (D = 64: tmm7, tmm2 and tmm3 in turn). The tile configuration is per thread (amx_tiles.h); it is loaded when a thread
// first needs it or when another layout was loaded since.
#include <algorithm>
#include <cstring>

#include "amx_tiles.h"
#include "dtype.h"
#include "indexer_fp8_detail.h"
#include "simd.h"

namespace glance {

static_assert(kKeyChunk == 48, "the AMX body scores a chunk as 3 C tiles of 16 keys");

#if GLANCE_AMX_BUILD  // simd.h

namespace {

constexpr int64_t kPrefetchAhead = 4096;  // bytes of keys

// Position pos (0..31) of A/B tile c holds the key column amx_column(c, pos).
inline int64_t amx_column(int64_t c, int64_t pos) { return 64 * (c / 2) + 16 * (pos / 8) + 8 * (c % 2) + pos % 8; }

inline uint16_t bf16_of_exact(float f) {  // f is exactly representable in bf16
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>(u >> 16);
}

// Low and high bytes of the bf16 value of each magnitude code 0..127 (the sign bit is copied from the code).
struct DecodeTables {
  alignas(64) uint8_t lo[128];
  alignas(64) uint8_t hi[128];
  DecodeTables() {
    for (int b = 0; b < 128; b++) {
      const uint16_t v = bf16_of_exact(e4m3_to_f32(static_cast<uint8_t>(b)));
      lo[b] = static_cast<uint8_t>(v & 0xFF);
      hi[b] = static_cast<uint8_t>(v >> 8);
    }
  }
};
const DecodeTables kTables;  // reads kE4M3Lut, which is constant-initialised (dequant.cc)

// This thread's tiles for a head padding hp and key width D (configuration ids 1-16, | 0x40 for D = 64). With D = 64
// the query needs only tmm0-1, so tmm2-3 become A tiles too (score_body rotates three A tiles, so that loading
// the next keys need not wait for the product that reads the previous ones).
void configure_tiles(int hp, int64_t D) {
  TileConfig cfg;
  for (int t = 0; t < 7; t++) {  // B tiles tmm0-3 and C tiles tmm4-6: hp fp32 / bf16 pairs per row
    cfg.rows[t] = 16;
    cfg.colsb[t] = static_cast<uint16_t>(4 * hp);
  }
  cfg.rows[7] = 16;  // A: 16 keys x 32 bf16
  cfg.colsb[7] = 64;
  if (D == 64) cfg.colsb[2] = cfg.colsb[3] = 64;
  load_tile_config(cfg, static_cast<uint32_t>(hp) | (D == 64 ? 0x40u : 0u));
}

// C tile CT = 16 key rows of D = 128 (from `rows`, 256 bytes apart) x the four B tiles, through A tile tmm7 (D = 128
// needs tmm0-3 for the query). A macro, not a template: GCC's tile intrinsics paste their register operands into the
// assembly text, so they must be literal numbers.
#define GLANCE_AMX_GROUP_PRODUCT128(CT, rows) \
  do {                                         \
    _tile_zero(CT);                            \
    _tile_loadd(7, (rows), 256);               \
    _tile_dpbf16ps(CT, 7, 0);                  \
    _tile_loadd(7, (rows) + 32, 256);          \
    _tile_dpbf16ps(CT, 7, 1);                  \
    _tile_loadd(7, (rows) + 64, 256);          \
    _tile_dpbf16ps(CT, 7, 2);                  \
    _tile_loadd(7, (rows) + 96, 256);          \
    _tile_dpbf16ps(CT, 7, 3);                  \
  } while (0)

// 16 keys' scores from their C rows ([16][HP] fp32, compact): sum_h w[h] relu(c[key][h]), in key order. Each stage
// adds adjacent lanes of a pair of vectors (even + odd lanes of their concatenation), halving the heads per key.
// HP is a template argument so that the stages unroll into registers (a runtime count kept v[] on the stack).
template <int HP>
GLANCE_AMX inline __m512 head_sum(const float* c, __m512 wpat) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  __m512 v[HP];
  const __m512 zero = _mm512_setzero_ps();
  for (int r = 0; r < HP; r++)  // relu; the masked form keeps GCC 12 from warning about max_ps's undefined passthrough
    v[r] = _mm512_mul_ps(_mm512_mask_max_ps(zero, 0xFFFF, _mm512_load_ps(c + 16 * r), zero), wpat);
  for (int n = HP; n > 1; n /= 2)
    for (int i = 0; i < n / 2; i++)
      v[i] = _mm512_add_ps(_mm512_permutex2var_ps(v[2 * i], even, v[2 * i + 1]),
                           _mm512_permutex2var_ps(v[2 * i], odd, v[2 * i + 1]));
  return v[0];
}

}  // namespace

bool amx_indexer_usable(int64_t Hi, int64_t D) { return use_amx_bf16() && Hi >= 1 && Hi <= 16 && (D == 64 || D == 128); }

void amx_prepare_query(AmxQuery& aq, const uint8_t* q, const float* w, int64_t Hi, int64_t D) {
  int hp = 1;
  while (hp < Hi) hp *= 2;
  aq.hp = hp;
  std::memset(aq.b, 0, sizeof aq.b);
  for (int64_t c = 0; c < D / 32; c++)
    for (int64_t pos = 0; pos < 32; pos++)  // B tile c: row pos/2 holds (head h: columns pos, pos+1 as a pair)
      for (int64_t h = 0; h < Hi; h++)
        aq.b[c][pos / 2][2 * h + pos % 2] = bf16_of_exact(e4m3_to_f32(q[h * D + amx_column(c, pos)]));
  for (int i = 0; i < 16; i++) aq.wpat[i] = (i % hp) < Hi ? w[i % hp] : 0.0f;
}

GLANCE_AMX void amx_decode_keys(uint16_t* rows, const uint8_t* keys, int64_t n, int64_t D) {
  const __m512i lo0 = _mm512_load_si512(kTables.lo), lo1 = _mm512_load_si512(kTables.lo + 64);
  const __m512i hi0 = _mm512_load_si512(kTables.hi), hi1 = _mm512_load_si512(kTables.hi + 64);
  const __m512i sign = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t j = 0; j < n; j++)
    for (int64_t g = 0; g < D; g += 64) {
      // In a decode step the keys come from memory (the weights evicted them); the hardware prefetcher alone left
      // the stream at ~8 GB/s on the development VM, 4 KB ahead ~25% faster (a prefetch past the cache is harmless).
      prefetch_far(keys + j * D + g + kPrefetchAhead);
      const __m512i x = _mm512_loadu_si512(keys + j * D + g);
      const __m512i lo = _mm512_permutex2var_epi8(lo0, x, lo1);  // index bits 0-6: the magnitude code
      const __m512i hi = _mm512_ternarylogic_epi32(_mm512_permutex2var_epi8(hi0, x, hi1), x, sign, 0xF8);  // | sign
      _mm512_storeu_si512(rows + j * D + g, _mm512_unpacklo_epi8(lo, hi));
      _mm512_storeu_si512(rows + j * D + g + 32, _mm512_unpackhi_epi8(lo, hi));
    }
}

// 48 keys of D = 64 (rows [48][64] bf16) into C tiles 4-6, the A tiles rotating over tmm7, tmm2, tmm3.
#define GLANCE_AMX_CHUNK64(rows)         \
  do {                                   \
    _tile_zero(4);                       \
    _tile_zero(5);                       \
    _tile_zero(6);                       \
    _tile_loadd(7, (rows), 128);         \
    _tile_loadd(2, (rows) + 32, 128);    \
    _tile_dpbf16ps(4, 7, 0);             \
    _tile_loadd(3, (rows) + 1024, 128);  \
    _tile_dpbf16ps(4, 2, 1);             \
    _tile_loadd(7, (rows) + 1056, 128);  \
    _tile_dpbf16ps(5, 3, 0);             \
    _tile_loadd(2, (rows) + 2048, 128);  \
    _tile_dpbf16ps(5, 7, 1);             \
    _tile_loadd(3, (rows) + 2080, 128);  \
    _tile_dpbf16ps(6, 2, 0);             \
    _tile_dpbf16ps(6, 3, 1);             \
  } while (0)

namespace {

// out[j] for j < n (n any) from decoded rows (n <= kKeyChunk, kKeyChunk finite rows) or, when keys is not null,
// from the e4m3 keys decoded 48 at a time here: the tile configuration and the query's B tiles are loaded once for
// the whole range (a decode step scores each thread's part of the keys in one call).
template <int HP>
GLANCE_AMX void score_body(float* out, const uint16_t* decoded, const uint8_t* keys, const float* ks, int64_t n,
                           const AmxQuery& aq, int64_t D) {
  configure_tiles(HP, D);
  constexpr int64_t bstride = sizeof aq.b[0][0];  // a B row: HP pairs used of 16
  _tile_loadd(0, aq.b[0], bstride);
  _tile_loadd(1, aq.b[1], bstride);
  if (D == 128) {
    _tile_loadd(2, aq.b[2], bstride);
    _tile_loadd(3, aq.b[3], bstride);
  }
  constexpr int64_t cstride = 4 * HP;  // C rows stored compactly: 16 keys x HP heads
  const __m512 wpat = _mm512_loadu_ps(aq.wpat);
  alignas(64) uint16_t buf[kKeyChunk * 128];
  alignas(64) float c[3][16 * 16];
  for (int64_t j0 = 0; j0 < n; j0 += kKeyChunk) {
    const int64_t m = std::min(kKeyChunk, n - j0);
    const uint16_t* rows = decoded;
    if (keys != nullptr) {
      amx_decode_keys(buf, keys + j0 * D, m, D);
      if (m < kKeyChunk) std::fill(buf + m * D, buf + kKeyChunk * D, uint16_t{0});  // finite rows past the keys
      rows = buf;
    }
    if (D == 64) {
      GLANCE_AMX_CHUNK64(rows);
    } else {
      GLANCE_AMX_GROUP_PRODUCT128(4, rows);
      GLANCE_AMX_GROUP_PRODUCT128(5, rows + 16 * 128);
      GLANCE_AMX_GROUP_PRODUCT128(6, rows + 32 * 128);
    }
    _tile_stored(4, c[0], cstride);
    _tile_stored(5, c[1], cstride);
    _tile_stored(6, c[2], cstride);
    for (int64_t g = 0; g * 16 < m; g++) {
      const int64_t mg = std::min<int64_t>(16, m - g * 16);
      const float* kg = ks + j0 + g * 16;
      float* og = out + j0 + g * 16;
      if (mg == 16) {
        _mm512_storeu_ps(og, _mm512_mul_ps(head_sum<HP>(c[g], wpat), _mm512_loadu_ps(kg)));
      } else {  // key scales past n are never read
        const __mmask16 valid = static_cast<__mmask16>((1u << mg) - 1);
        _mm512_mask_storeu_ps(og, valid, _mm512_mul_ps(head_sum<HP>(c[g], wpat), _mm512_maskz_loadu_ps(valid, kg)));
      }
    }
  }
}

GLANCE_AMX void score_dispatch(float* out, const uint16_t* decoded, const uint8_t* keys, const float* ks, int64_t n,
                               const AmxQuery& aq, int64_t D) {
  switch (aq.hp) {
    case 1: return score_body<1>(out, decoded, keys, ks, n, aq, D);
    case 2: return score_body<2>(out, decoded, keys, ks, n, aq, D);
    case 4: return score_body<4>(out, decoded, keys, ks, n, aq, D);
    case 8: return score_body<8>(out, decoded, keys, ks, n, aq, D);
    default: return score_body<16>(out, decoded, keys, ks, n, aq, D);
  }
}

}  // namespace

GLANCE_AMX void amx_scores(float* out, const uint16_t* rows, int64_t n, const AmxQuery& aq, int64_t D,
                           const float* ks) {
  score_dispatch(out, rows, nullptr, ks, n, aq, D);
}

GLANCE_AMX void amx_score_keys(float* out, const uint8_t* keys, const float* ks, int64_t n, const AmxQuery& aq,
                               int64_t D) {
  score_dispatch(out, nullptr, keys, ks, n, aq, D);
}

#else  // no AMX in this build

bool amx_indexer_usable(int64_t, int64_t) { return false; }
void amx_prepare_query(AmxQuery&, const uint8_t*, const float*, int64_t, int64_t) {}
void amx_decode_keys(uint16_t*, const uint8_t*, int64_t, int64_t) {}
void amx_scores(float*, const uint16_t*, int64_t, const AmxQuery&, int64_t, const float*) {}
void amx_score_keys(float*, const uint8_t*, const float*, int64_t, const AmxQuery&, int64_t) {}

#endif

}  // namespace glance
