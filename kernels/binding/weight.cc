#include "weight.h"

#include <string>

#include "addon_data.h"

namespace glance {
namespace binding {

Napi::Function NativeWeight::Define(Napi::Env env) { return DefineClass(env, "NativeWeight", {}); }

static bool parse_dtype(const std::string& s, DType* d) {
  if (s == "F32") *d = DType::F32;
  else if (s == "BF16") *d = DType::BF16;
  else if (s == "F16") *d = DType::F16;
  else if (s == "F8_E4M3") *d = DType::F8_E4M3;
  else return false;
  return true;
}

NativeWeight::NativeWeight(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeWeight>(info) {
  Args a(info, "createWeight", 4);
  const Napi::Value dv = info[0];
  if (!dv.IsTypedArray() || dv.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    a.type_error("data must be a Uint8Array");
  Napi::Uint8Array data = dv.As<Napi::Uint8Array>();
  const std::string dts = a.string(1, "dtype");
  DType dtype;
  if (!parse_dtype(dts, &dtype)) a.type_error("dtype must be one of F32, BF16, F16, F8_E4M3, got '" + dts + "'");
  const int64_t rows = a.integer(2, "rows", 0, INT32_MAX);
  const int64_t cols = a.integer(3, "cols", 0, INT32_MAX);
  const int64_t bytes = a.product({rows, cols, static_cast<int64_t>(dtype_size(dtype))}, "rows*cols");
  if (static_cast<int64_t>(data.ByteLength()) != bytes)
    a.range_error("data has byteLength " + std::to_string(data.ByteLength()) + ", expected " + std::to_string(bytes) +
                  " (" + shape_str("rows*cols*sizeof(" + dts + ")", {rows, cols, static_cast<int64_t>(dtype_size(dtype))}) + ")");
  w_.data = data.Data();
  w_.dtype = dtype;
  w_.rows = rows;
  w_.cols = cols;
  const bool has_scale = info.Length() > 4 && !a.is_null(4);
  if (dtype == DType::F8_E4M3) {
    if (!has_scale) a.type_error("scaleInv (a Float32Array) is required for F8_E4M3");
    ArrayArg<float> s = a.f32(4, "scaleInv");
    const int64_t sr = (rows + kFp8Block - 1) / kFp8Block, sc = (cols + kFp8Block - 1) / kFp8Block;
    a.expect_length(s, sr * sc, shape_str("ceil(rows/128)*ceil(cols/128)", {sr, sc}));
    w_.scale_inv = s.data;
    w_.scale_cols = sc;
    scale_ref_ = Napi::Persistent(info[4].As<Napi::Float32Array>().ArrayBuffer());
  } else if (has_scale) {
    a.type_error("scaleInv is only used with F8_E4M3 (dtype is " + dts + ")");
  }
  data_ref_ = Napi::Persistent(data.ArrayBuffer());
  Napi::Object self = info.This().As<Napi::Object>();
  const auto ro = static_cast<napi_property_attributes>(napi_enumerable);
  self.DefineProperties({
      Napi::PropertyDescriptor::Value("rows", Napi::Number::New(info.Env(), static_cast<double>(rows)), ro),
      Napi::PropertyDescriptor::Value("cols", Napi::Number::New(info.Env(), static_cast<double>(cols)), ro),
      Napi::PropertyDescriptor::Value("dtype", Napi::String::New(info.Env(), dts), ro),
  });
}

const Weight& NativeWeight::From(const Args& args, size_t i, const char* name) {
  const Napi::Value v = args.info()[i];
  AddonData* d = args.env().GetInstanceData<AddonData>();
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(d->weight_ctor.Value()))
    args.type_error(std::string(name) + " must be a NativeWeight (from createWeight)");
  NativeWeight* nw = Unwrap(v.As<Napi::Object>());
  if (nw->data_ref_.Value().IsDetached() || (!nw->scale_ref_.IsEmpty() && nw->scale_ref_.Value().IsDetached()))
    args.type_error(std::string(name) + ": the ArrayBuffer behind the weight has been detached");
  return nw->w_;
}

const Weight& NativeWeight::FromValue(Napi::Env env, Napi::Value v, const std::string& name) {
  AddonData* d = env.GetInstanceData<AddonData>();
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(d->weight_ctor.Value()))
    throw Napi::TypeError::New(env, name + " must be a NativeWeight (from createWeight)");
  NativeWeight* nw = Unwrap(v.As<Napi::Object>());
  if (nw->data_ref_.Value().IsDetached() || (!nw->scale_ref_.IsEmpty() && nw->scale_ref_.Value().IsDetached()))
    throw Napi::TypeError::New(env, name + ": the ArrayBuffer behind the weight has been detached");
  return nw->w_;
}

}  // namespace binding
}  // namespace glance
