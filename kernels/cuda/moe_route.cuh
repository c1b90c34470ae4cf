// MoE routing of one token by one warp (device code; model_ops.cu's moe_route kernel and the decode GEMV batch's
// routing prologue in gemv.cu). Same semantics as the CPU router (kernels/cpu/moe.cc, contract.ts RouterOptions):
//   scores = sigmoid(logits) (scoring 0) or softmax(logits) (1); choice = scores + bias;
//   method 1 (group_limited_greedy) / 2 (noaux_tc), nGroup > 1: group score = max (1) or top-2 sum (2) of the
//   group's choices; the topkGroup best groups are kept, the others' choices set to 0;
//   K picks of the best choice (descending, ties → lower index, NaN never beats a number); weight = score of the
//   pick, divided by their sum + 1e-20 when normTopk, times scale.
// The warp picks each expert by a shuffle reduction over a total order (number > NaN, larger first, then lower
// index), which selects exactly what the CPU's serial scan selects. The weight sum runs serially in pick order.
#pragma once

#include "common.cuh"
#include "model_ops.cuh"

namespace glance {
namespace cuda {

constexpr int kMaxRouteExperts = 512;
constexpr int kMaxRouteGroups = 64;
constexpr int kMaxRouteK = 16;

// Shared-memory scratch of one routing warp.
struct RouteScratch {
  float scores[kMaxRouteExperts];
  float choice[kMaxRouteExperts];
  float gscore[kMaxRouteGroups];
};

// (va, a) ranks before (vb, b): numbers before NaN, larger first, then the lower index; b < 0 is "none".
__device__ __forceinline__ bool route_before(float va, int a, float vb, int b) {
  if (b < 0) return a >= 0;
  if (a < 0) return false;
  const bool na = isnan(va), nb = isnan(vb);
  if (na != nb) return nb;
  if (!na && va != vb) return va > vb;
  return a < b;
}

// Warp-wide best (value, index) under route_before; every lane gets the winner's index.
__device__ __forceinline__ int warp_route_best(float v, int i) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (route_before(ov, oi, v, i)) {
      v = ov;
      i = oi;
    }
  }
  return i;
}

// Routes token t; all 32 lanes of the warp call it. ids / weights [K] receive the result (written by lane 0).
__device__ inline void route_token_warp(const RouteSpec& r, int t, RouteScratch& sh, int* ids, float* weights) {
  const int lane = threadIdx.x & 31;
  const int E = r.E;
  const float* lg = r.logits + static_cast<size_t>(t) * E;
  if (r.scoring == 0) {
    for (int e = lane; e < E; e += 32) sh.scores[e] = 1.0f / (1.0f + expf(-lg[e]));
  } else {
    float m = -INFINITY;
    for (int e = lane; e < E; e += 32) m = fmaxf(m, lg[e]);
    m = warp_max(m);
    for (int e = lane; e < E; e += 32) sh.scores[e] = expf(lg[e] - m);
    __syncwarp();
    float sum = 0.0f;
    for (int e = 0; e < E; e++) sum += sh.scores[e];  // serial: the CPU's order (every lane, same result)
    __syncwarp();
    for (int e = lane; e < E; e += 32) sh.scores[e] /= sum;
  }
  __syncwarp();
  for (int e = lane; e < E; e += 32) sh.choice[e] = r.bias ? sh.scores[e] + r.bias[e] : sh.scores[e];
  __syncwarp();
  if (r.method != 0 && r.n_group > 1) {
    const int per = E / r.n_group;
    for (int g = lane; g < r.n_group; g += 32) {
      const float* c = sh.choice + g * per;
      float s;
      if (r.method == 1) {
        s = c[0];
        for (int i = 1; i < per; i++) s = fmaxf(s, c[i]);
      } else {
        float a = -INFINITY, b = -INFINITY;
        for (int i = 0; i < per; i++) {
          if (c[i] > a) {
            b = a;
            a = c[i];
          } else if (c[i] > b) {
            b = c[i];
          }
        }
        s = per >= 2 ? a + b : a;
      }
      sh.gscore[g] = s;
    }
    __syncwarp();
    // keep bit per group, lanes own groups lane and lane + 32
    uint32_t kept = 0;  // bit j: group lane + 32 j kept
    for (int j = 0; j < r.topk_group; j++) {
      float bv = 0.0f;
      int bi = -1;
      for (int q = 0; q < 2; q++) {
        const int g = lane + 32 * q;
        if (g < r.n_group && !(kept & (1u << q)) && route_before(sh.gscore[g], g, bv, bi)) {
          bv = sh.gscore[g];
          bi = g;
        }
      }
      const int best = warp_route_best(bv, bi);
      if (best >= 0 && (best & 31) == lane) kept |= 1u << (best >> 5);
    }
    for (int q = 0; q < 2; q++) {
      const int g = lane + 32 * q;
      if (g < r.n_group && !(kept & (1u << q)))
        for (int i = 0; i < per; i++) sh.choice[g * per + i] = 0.0f;
    }
    __syncwarp();
  }
  // K picks; lane l owns experts l, l + 32, ... (taken bits in a register: E ≤ 512 → 16 per lane).
  uint32_t taken = 0;
  float sum = 0.0f;
  int pick[kMaxRouteK];
  float w[kMaxRouteK];
  for (int j = 0; j < r.K; j++) {
    float bv = 0.0f;
    int bi = -1;
    for (int q = 0, e = lane; e < E; q++, e += 32)
      if (!(taken & (1u << q)) && route_before(sh.choice[e], e, bv, bi)) {
        bv = sh.choice[e];
        bi = e;
      }
    const int best = warp_route_best(bv, bi);
    if ((best & 31) == lane) taken |= 1u << (best >> 5);
    pick[j] = best;
    w[j] = sh.scores[best];
    sum += w[j];
  }
  if (lane == 0) {
    const float den = sum + 1e-20f;
    for (int j = 0; j < r.K; j++) {
      ids[j] = pick[j];
      weights[j] = (r.norm_topk ? w[j] / den : w[j]) * r.scale;
    }
  }
}

}  // namespace cuda
}  // namespace glance
