// Weight storage types and their conversion to fp32 (bf16, f16, DeepSeek FP8 e4m3 with 128x128 block scales).
//
// All loads go through memcpy: weights come straight out of a mapped safetensors file, whose tensors are not
// guaranteed to be 2- or 4-byte aligned. Little-endian layout is assumed (safetensors is little-endian).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace glance {

enum class DType : int { F32 = 0, BF16 = 1, F16 = 2, F8_E4M3 = 3 };

inline size_t dtype_size(DType d) {
  switch (d) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::F16: return 2;
    case DType::F8_E4M3: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::F8_E4M3: return "F8_E4M3";
  }
  return "?";
}

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

inline float load_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// bf16 is the top half of an fp32.
inline float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }

// IEEE binary16 -> binary32, exact for every input (subnormals, infinities, NaN payloads).
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (man << 13));  // inf / nan
  if (exp == 0) {
    if (man == 0) return bits_to_f32(sign);  // +-0
    // subnormal: normalise
    exp = 113;  // 127 - 15 + 1
    while ((man & 0x400u) == 0) {
      man <<= 1;
      exp--;
    }
    man &= 0x3ffu;
    return bits_to_f32(sign | (exp << 23) | (man << 13));
  }
  return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

// float8 e4m3fn (OCP "FN" variant used by DeepSeek and torch.float8_e4m3fn): 1 sign, 4 exponent bits
// (bias 7), 3 mantissa bits, subnormals, no infinities, S.1111.111 = NaN. Max finite 448.
struct E4M3Lut {
  float v[256];
};
extern const E4M3Lut kE4M3Lut;  // constant-initialised in dequant.cc
inline float e4m3_to_f32(uint8_t b) { return kE4M3Lut.v[b]; }

// A 2-D weight [rows, cols] row-major over borrowed bytes (the N-API layer keeps them alive).
// For F8_E4M3, scale_inv is [ceil(rows/128), ceil(cols/128)] and
//   W[r][c] = e4m3(data[r*cols + c]) * scale_inv[(r/128) * scale_cols + c/128].
struct Weight {
  const uint8_t* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  const float* scale_inv = nullptr;
  int64_t scale_cols = 0;

  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * static_cast<size_t>(cols) * dtype_size(dtype); }
  float block_scale(int64_t r, int64_t c) const { return scale_inv[(r >> 7) * scale_cols + (c >> 7)]; }
};

// FP8 block size along both dimensions (DeepSeek weight_block_size [128, 128]).
constexpr int64_t kFp8Block = 128;

// dst[i] = W[r][c0 + i] in fp32 for i < n (FP8: block scale applied). 0 <= c0, c0 + n <= cols.
// Serial; AVX2/F16C body chosen at run time. Defined in dequant.cc.
void dequant_row(const Weight& w, int64_t r, int64_t c0, int64_t n, float* dst);

}  // namespace glance
