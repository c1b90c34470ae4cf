// Per-environment state of the addon (one per main thread / worker_thread that loads it).
#pragma once

#include <napi.h>

namespace glance {
namespace binding {

struct AddonData {
  Napi::FunctionReference weight_ctor;
};

}  // namespace binding
}  // namespace glance
