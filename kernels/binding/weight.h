// NativeWeight: the JS object createWeight returns. It holds the kernel-side Weight (a borrowed pointer into
// the data's ArrayBuffer) and strong references to that ArrayBuffer and to the FP8 scale array, so that a
// mapped file outlives every weight registered over it. Exposes rows, cols and dtype as read-only properties.
#pragma once

#include <napi.h>

#include "../cpu/dtype.h"
#include "args.h"

namespace glance {
namespace binding {

class NativeWeight : public Napi::ObjectWrap<NativeWeight> {
 public:
  static Napi::Function Define(Napi::Env env);
  // new NativeWeight(data, dtype, rows, cols, scaleInv?) -- called by createWeight with its own arguments.
  explicit NativeWeight(const Napi::CallbackInfo& info);

  // The Weight behind argument i of an op, or a TypeError naming the argument.
  static const Weight& From(const Args& args, size_t i, const char* name);
  // The Weight behind any value (e.g. a field of a model description), or a TypeError naming `name`.
  static const Weight& FromValue(Napi::Env env, Napi::Value v, const std::string& name);

 private:
  Weight w_;
  Napi::Reference<Napi::ArrayBuffer> data_ref_;
  Napi::Reference<Napi::ArrayBuffer> scale_ref_;
};

}  // namespace binding
}  // namespace glance
