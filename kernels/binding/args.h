// Argument checking for the N-API surface: every op validates types, integer ranges and typed-array lengths
// against its shape arguments before any kernel runs, and throws a TypeError (wrong type) or RangeError (wrong
// size / value) whose message names the op, the argument and what was expected.
//
// Length policy: typed arrays must have exactly the length their shape gives, except where the contract gives
// a count separate from the array (the S rows of the mlaAttention kv cache, the indexer keys and key scales,
// siluMul's n):
// there a longer array is accepted and only its prefix is used.
#pragma once

#include <napi.h>

#include <cstdint>
#include <initializer_list>
#include <string>

namespace glance {
namespace binding {

template <class T>
struct ArrayArg {
  T* data = nullptr;
  int64_t length = 0;  // elements
  const char* name = "";
  size_t bytes() const { return static_cast<size_t>(length) * sizeof(T); }
};

class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* op, size_t nargs);

  Napi::Env env() const { return info_.Env(); }
  const Napi::CallbackInfo& info() const { return info_; }
  const char* op() const { return op_; }

  [[noreturn]] void type_error(const std::string& msg) const;
  [[noreturn]] void range_error(const std::string& msg) const;

  ArrayArg<float> f32(size_t i, const char* name) const;
  ArrayArg<int32_t> i32(size_t i, const char* name) const;
  ArrayArg<uint8_t> u8(size_t i, const char* name) const;  // a Uint8Array (raw bytes: e4m3 codes)
  ArrayArg<uint16_t> u16(size_t i, const char* name) const;  // a Uint16Array (bf16 bit patterns)
  bool is_u16(size_t i) const;  // whether argument i is a Uint16Array
  bool is_u8(size_t i) const;   // whether argument i is a Uint8Array
  bool is_f32(size_t i) const;  // whether argument i is a Float32Array
  bool is_null(size_t i) const;  // null or undefined

  // An integer-valued number in [lo, hi].
  int64_t integer(size_t i, const char* name, int64_t lo, int64_t hi) const;
  // A finite number.
  double number(size_t i, const char* name) const;
  bool boolean(size_t i, const char* name) const;
  std::string string(size_t i, const char* name) const;

  // Exact length check: "op: name has length 12, expected 16 (T*cols = 2*8)".
  template <class T>
  void expect_length(const ArrayArg<T>& a, int64_t expected, const std::string& shape) const {
    if (a.length != expected) length_error(a.name, a.length, expected, shape, false);
  }
  template <class T>
  void expect_min_length(const ArrayArg<T>& a, int64_t expected, const std::string& shape) const {
    if (a.length < expected) length_error(a.name, a.length, expected, shape, true);
  }

  // Product of sizes with an overflow check (RangeError past 2^53).
  int64_t product(std::initializer_list<int64_t> dims, const char* what) const;

  // out and in must not share memory (unless allow_same and they start at the same address with equal size).
  template <class A, class B>
  void expect_disjoint(const ArrayArg<A>& out, const ArrayArg<B>& in, bool allow_same = false) const {
    const char* o0 = reinterpret_cast<const char*>(out.data);
    const char* i0 = reinterpret_cast<const char*>(in.data);
    const char* o1 = o0 + out.bytes();
    const char* i1 = i0 + in.bytes();
    if (out.bytes() == 0 || in.bytes() == 0) return;
    if (allow_same && o0 == i0 && o1 == i1) return;
    if (o0 < i1 && i0 < o1) overlap_error(out.name, in.name, allow_same);
  }

 private:
  [[noreturn]] void length_error(const char* name, int64_t got, int64_t expected, const std::string& shape,
                                 bool at_least) const;
  [[noreturn]] void overlap_error(const char* out, const char* in, bool allow_same) const;

  const Napi::CallbackInfo& info_;
  const char* op_;
};

// "a*b = 2*8" style shape strings for messages.
std::string shape_str(const std::string& formula, std::initializer_list<int64_t> values);

}  // namespace binding
}  // namespace glance
