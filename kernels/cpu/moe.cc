// MoE routing (DeepSeek V2 / V3 / V3.2 gates, with HF transformers semantics).
//
// Per token t:
//   scores   = sigmoid(logits[t])  or  softmax(logits[t])                       (fp32)
//   choice   = scores + bias  (bias only for selection; no bias: choice = scores)
//   if method != greedy and n_group > 1:
//     group score = max(choice in group)                 (group_limited_greedy, DeepSeek V2)
//                 = sum of the top 2 of choice in group  (noaux_tc, DeepSeek V3 / V3.2)
//     keep the topk_group best groups; choice of experts in the other groups = 0.0
//     (HF masked_fill(~mask, 0.0); the original DeepSeek code uses -inf, which differs only when kept experts
//     have choice < 0 -- we follow HF, the reference the engine is checked against)
//   ids      = the K best experts by choice, in descending order of choice (ties: lower expert id first)
//   weights  = scores[ids];  if norm_topk: weights /= (sum(weights) + 1e-20);  weights *= scale
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels.h"
#include "thread_pool.h"

namespace glance {

namespace {

// Indices of the k largest of v[0..n) (descending, ties -> lower index); k <= n.
void top_indices(const float* v, int64_t n, int64_t k, std::vector<int32_t>& order, int32_t* outIdx) {
  order.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i++) order[i] = static_cast<int32_t>(i);
  auto better = [v](int32_t a, int32_t b) {
    const float va = v[a], vb = v[b];
    if (va != vb) {
      if (std::isnan(va)) return false;  // NaN sorts last
      if (std::isnan(vb)) return true;
      return va > vb;
    }
    return a < b;
  };
  std::partial_sort(order.begin(), order.begin() + k, order.end(), better);
  for (int64_t i = 0; i < k; i++) outIdx[i] = order[i];
}

void route_row(int32_t* ids, float* weights, const float* logits, int64_t E, int64_t K, const RouterParams& p,
               std::vector<float>& scores, std::vector<float>& choice, std::vector<float>& gscore,
               std::vector<int32_t>& order, std::vector<int32_t>& gsel) {
  scores.resize(static_cast<size_t>(E));
  choice.resize(static_cast<size_t>(E));
  if (p.scoring == RouterScoring::Sigmoid) {
    for (int64_t e = 0; e < E; e++) scores[e] = 1.0f / (1.0f + std::exp(-logits[e]));
  } else {
    float m = -INFINITY;
    for (int64_t e = 0; e < E; e++) m = std::max(m, logits[e]);
    float sum = 0.0f;
    for (int64_t e = 0; e < E; e++) {
      scores[e] = std::exp(logits[e] - m);
      sum += scores[e];
    }
    for (int64_t e = 0; e < E; e++) scores[e] /= sum;
  }
  for (int64_t e = 0; e < E; e++) choice[e] = p.bias ? scores[e] + p.bias[e] : scores[e];

  if (p.method != RouterMethod::Greedy && p.n_group > 1) {
    const int64_t G = p.n_group, per = E / G;
    gscore.resize(static_cast<size_t>(G));
    for (int64_t g = 0; g < G; g++) {
      const float* c = choice.data() + g * per;
      if (p.method == RouterMethod::GroupLimitedGreedy) {
        float m = c[0];
        for (int64_t i = 1; i < per; i++) m = std::max(m, c[i]);
        gscore[g] = m;
      } else {  // noaux_tc: sum of the two largest (one if the group has a single expert)
        float a = -INFINITY, b = -INFINITY;
        for (int64_t i = 0; i < per; i++) {
          if (c[i] > a) {
            b = a;
            a = c[i];
          } else if (c[i] > b) {
            b = c[i];
          }
        }
        gscore[g] = per >= 2 ? a + b : a;
      }
    }
    gsel.resize(static_cast<size_t>(p.topk_group));
    top_indices(gscore.data(), G, p.topk_group, order, gsel.data());
    std::vector<char> keep(static_cast<size_t>(G), 0);
    for (int32_t g : gsel) keep[g] = 1;
    for (int64_t g = 0; g < G; g++)
      if (!keep[g])
        for (int64_t i = 0; i < per; i++) choice[g * per + i] = 0.0f;
  }

  top_indices(choice.data(), E, K, order, ids);
  float sum = 0.0f;
  for (int64_t i = 0; i < K; i++) {
    weights[i] = scores[ids[i]];
    sum += weights[i];
  }
  const float den = sum + 1e-20f;
  for (int64_t i = 0; i < K; i++) weights[i] = (p.norm_topk ? weights[i] / den : weights[i]) * p.scale;
}

}  // namespace

// ids, weights: [T, K] from logits [T, E] as described at the top of this file; rows in parallel.
void moe_route(int32_t* ids, float* weights, const float* logits, int64_t T, int64_t E, int64_t K,
               const RouterParams& p) {
  if (T <= 0 || K <= 0) return;
  parallel_for(
      T,
      [&](int64_t b, int64_t e) {
        std::vector<float> scores, choice, gscore;
        std::vector<int32_t> order, gsel;
        for (int64_t t = b; t < e; t++)
          route_row(ids + t * K, weights + t * K, logits + t * E, E, K, p, scores, choice, gscore, order, gsel);
      },
      threads_for(T * E, 1 << 14));
}

}  // namespace glance
