#include "args.h"

#include <cmath>

namespace glance {
namespace binding {

Args::Args(const Napi::CallbackInfo& info, const char* op, size_t nargs) : info_(info), op_(op) {
  if (info.Length() < nargs)
    type_error(std::string("expected ") + std::to_string(nargs) + " arguments, got " + std::to_string(info.Length()));
}

void Args::type_error(const std::string& msg) const { throw Napi::TypeError::New(env(), std::string(op_) + ": " + msg); }

void Args::range_error(const std::string& msg) const {
  throw Napi::RangeError::New(env(), std::string(op_) + ": " + msg);
}

namespace {

bool is_typed(const Napi::Value& v, napi_typedarray_type type) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == type;
}

// The typed array argument i as (data, element count, name); a TypeError "name must be a|an <what>" otherwise.
template <class T, napi_typedarray_type Type>
ArrayArg<T> typed_array(const Args& args, size_t i, const char* name, const char* what) {
  const Napi::Value v = args.info()[i];
  if (!is_typed(v, Type)) args.type_error(std::string(name) + " must be " + what);
  Napi::TypedArrayOf<T> a = v.As<Napi::TypedArrayOf<T>>();
  ArrayArg<T> r;
  r.data = a.Data();
  r.length = static_cast<int64_t>(a.ElementLength());
  r.name = name;
  return r;
}

}  // namespace

ArrayArg<float> Args::f32(size_t i, const char* name) const {
  return typed_array<float, napi_float32_array>(*this, i, name, "a Float32Array");
}

ArrayArg<int32_t> Args::i32(size_t i, const char* name) const {
  return typed_array<int32_t, napi_int32_array>(*this, i, name, "an Int32Array");
}

ArrayArg<uint8_t> Args::u8(size_t i, const char* name) const {
  return typed_array<uint8_t, napi_uint8_array>(*this, i, name, "a Uint8Array");
}

ArrayArg<uint16_t> Args::u16(size_t i, const char* name) const {
  return typed_array<uint16_t, napi_uint16_array>(*this, i, name, "a Uint16Array (bf16 bit patterns)");
}

bool Args::is_u16(size_t i) const { return is_typed(info_[i], napi_uint16_array); }
bool Args::is_u8(size_t i) const { return is_typed(info_[i], napi_uint8_array); }
bool Args::is_f32(size_t i) const { return is_typed(info_[i], napi_float32_array); }

bool Args::is_null(size_t i) const {
  const Napi::Value v = info_[i];
  return v.IsNull() || v.IsUndefined();
}

int64_t Args::integer(size_t i, const char* name, int64_t lo, int64_t hi) const {
  const Napi::Value v = info_[i];
  if (!v.IsNumber()) type_error(std::string(name) + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d) type_error(std::string(name) + " must be an integer, got " + std::to_string(d));
  if (d < static_cast<double>(lo) || d > static_cast<double>(hi))
    range_error(std::string(name) + " = " + std::to_string(static_cast<long long>(d)) + " is out of range [" +
                std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return static_cast<int64_t>(d);
}

double Args::number(size_t i, const char* name) const {
  const Napi::Value v = info_[i];
  if (!v.IsNumber()) type_error(std::string(name) + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) range_error(std::string(name) + " must be finite");
  return d;
}

bool Args::boolean(size_t i, const char* name) const {
  const Napi::Value v = info_[i];
  if (!v.IsBoolean()) type_error(std::string(name) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::string Args::string(size_t i, const char* name) const {
  const Napi::Value v = info_[i];
  if (!v.IsString()) type_error(std::string(name) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

int64_t Args::product(std::initializer_list<int64_t> dims, const char* what) const {
  int64_t p = 1;
  for (int64_t d : dims) {
    if (__builtin_mul_overflow(p, d, &p) || p > (int64_t(1) << 53)) range_error(std::string(what) + " is too large");
  }
  return p;
}

void Args::length_error(const char* name, int64_t got, int64_t expected, const std::string& shape,
                        bool at_least) const {
  range_error(std::string(name) + " has length " + std::to_string(got) + ", expected " + (at_least ? "at least " : "") +
              std::to_string(expected) + " (" + shape + ")");
}

void Args::overlap_error(const char* out, const char* in, bool allow_same) const {
  range_error(std::string(out) + " must not overlap " + in + (allow_same ? " (it may be the very same array)" : ""));
}

std::string shape_str(const std::string& formula, std::initializer_list<int64_t> values) {
  std::string s = formula;
  s += " = ";
  bool first = true;
  for (int64_t v : values) {
    if (!first) s += "*";
    s += std::to_string(v);
    first = false;
  }
  return s;
}

}  // namespace binding
}  // namespace glance
