// Decode matrix-vector products (contracts in model_ops.cuh): out[m, r] = Σ_c x[m, c] · W[r, c] for M ≤ 8
// activation rows, bandwidth- and latency-bound on the weight.
//
// One warp per weight row, 8 consecutive weight values per lane per step (two 16-byte loads for fp32, one for
// bf16/fp16, one 8-byte load for e4m3; an 8-value chunk never straddles a 128-wide FP8 scale block, so one scale load
// serves it), the activation rows (fp32, L1/L2-resident) reused for every weight load, warp-shuffle reduction.
//
// A decode step is a chain of small kernels whose cost is mostly launch latency, so one launch does as much as it can:
// - a batch of up to kGemvBatchJobs products that read the same activation rows (q_a, kv_a and the indexer's wk and
//   weights_proj all read rms(h)) runs in one grid, each block serving one job's rows;
// - the RMSNorm of the activation is folded in (norm_w non-null): each warp accumulates Σ x² beside its dot product
//   and scales the result, out = rsqrt(mean(x²) + eps) · Σ_c W[r, c] · x[c] · norm_w[c], so no normalised copy of x
//   is written or waited for;
// - SwiGLU jobs read gate and up rows together, out = silu(x·gate) · (x·up);
// - grouped (MoE) jobs take the weight of slot i from a device table by a device expert id, and may route the token
//   themselves (moe_route.cuh) from the router logits, writing the ids and weights for the down projection;
// - the MoE down projection and the weighted combine of the K experts (+ the shared expert's down projection) are one
//   kernel, accumulating into the residual stream.
// Every kernel follows the PDL contract of common.cuh (pdl_wait first).
#include <stdexcept>
#include <string>

#include "model_ops.cuh"
#include "moe_route.cuh"
#include "weights.cuh"

namespace glance {
namespace cuda {

namespace {

constexpr int kGemvWarps = 8;

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// The dot products of weight row r (and of the SwiGLU up row) with TM activation rows, partial per lane; ss: Σ x²
// per activation row (NORM). nw: the folded norm weight (NORM). VEC: cols % 8 == 0, 16-byte aligned rows.
template <int DT, int TM, bool VEC, bool NORM>
__device__ __forceinline__ void lane_dots(const DevWeight& w, const DevWeight* up, int r, const float* const (&xr)[TM],
                                          const float* nw, float (&acc)[TM], float (&acc2)[TM], float (&ss)[TM]) {
  const int lane = threadIdx.x & 31, cols = w.cols;
  if (VEC) {
#pragma unroll 2
    for (int c = lane * 8; c < cols; c += 32 * 8) {
      float v[8], u[8];
      wload8<DT>(w, r, c, v);
      if (up) wload8<DT>(*up, r, c, u);
      float4 na = make_float4(1.f, 1.f, 1.f, 1.f), nb = na;
      if (NORM) {
        na = __ldg(reinterpret_cast<const float4*>(nw + c));
        nb = __ldg(reinterpret_cast<const float4*>(nw + c + 4));
      }
#pragma unroll
      for (int i = 0; i < TM; i++) {
        const float4 a = __ldg(reinterpret_cast<const float4*>(xr[i] + c));
        const float4 b = __ldg(reinterpret_cast<const float4*>(xr[i] + c + 4));
        if (NORM) ss[i] += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w + b.x * b.x + b.y * b.y + b.z * b.z + b.w * b.w;
        const float x[8] = {a.x * na.x, a.y * na.y, a.z * na.z, a.w * na.w, b.x * nb.x, b.y * nb.y, b.z * nb.z, b.w * nb.w};
        acc[i] += v[0] * x[0] + v[1] * x[1] + v[2] * x[2] + v[3] * x[3] + v[4] * x[4] + v[5] * x[5] + v[6] * x[6] + v[7] * x[7];
        if (up) acc2[i] += u[0] * x[0] + u[1] * x[1] + u[2] * x[2] + u[3] * x[3] + u[4] * x[4] + u[5] * x[5] + u[6] * x[6] + u[7] * x[7];
      }
    }
  } else {
    for (int c = lane; c < cols; c += 32) {
      const float v = wload(w, r, c);
      const float u = up ? wload(*up, r, c) : 0.0f;
      const float n = NORM ? __ldg(nw + c) : 1.0f;
#pragma unroll
      for (int i = 0; i < TM; i++) {
        const float xv = __ldg(xr[i] + c);
        if (NORM) ss[i] += xv * xv;
        acc[i] += v * xv * n;
        if (up) acc2[i] += u * xv * n;
      }
    }
  }
}

// Block-level body of one job: warp → weight row r of weight w (grouped: already resolved), activation rows xr.
template <int TM>
__device__ __forceinline__ void job_rows(const GemvJob& job, const DevWeight& w, const DevWeight* up, int r,
                                         const float* const (&xr)[TM], int mc, int out_row0, const float* nw, int norm_dim,
                                         float eps, bool vec) {
  float acc[TM], acc2[TM], ss[TM];
#pragma unroll
  for (int i = 0; i < TM; i++) acc[i] = acc2[i] = ss[i] = 0.0f;
#define GLANCE_DOTS(DT)                                                              \
  if (vec) {                                                                         \
    if (nw) lane_dots<DT, TM, true, true>(w, up, r, xr, nw, acc, acc2, ss);          \
    else lane_dots<DT, TM, true, false>(w, up, r, xr, nw, acc, acc2, ss);            \
  } else {                                                                           \
    if (nw) lane_dots<DT, TM, false, true>(w, up, r, xr, nw, acc, acc2, ss);         \
    else lane_dots<DT, TM, false, false>(w, up, r, xr, nw, acc, acc2, ss);           \
  }
  switch (w.dtype) {
    case kF32: GLANCE_DOTS(kF32) break;
    case kBF16: GLANCE_DOTS(kBF16) break;
    case kF16: GLANCE_DOTS(kF16) break;
    default: GLANCE_DOTS(kF8E4M3) break;
  }
#undef GLANCE_DOTS
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int i = 0; i < TM; i++) {
    float s = warp_sum(acc[i]);
    if (nw) s *= rsqrtf(warp_sum(ss[i]) / norm_dim + eps);
    if (up) {
      float s2 = warp_sum(acc2[i]);
      if (nw) s2 *= rsqrtf(warp_sum(ss[i]) / norm_dim + eps);
      s = s / (1.0f + expf(-s)) * s2;  // silu(gate) · up, the expression of silu_mul
    }
    if (lane == 0 && i < mc) {
      float* o = job.out + static_cast<size_t>(out_row0 + i) * job.ldo + r;
      *o = job.accumulate ? *o + s : s;
    }
  }
}

__device__ __forceinline__ int job_row_blocks(const GemvJob& j) { return (j.w.rows + kGemvWarps - 1) / kGemvWarps; }

// Grid: Σ over jobs of row_blocks × groups blocks. Plain jobs: groups of TM activation rows; grouped jobs: one slot
// per group (activation row slot / x_div).
template <int TM>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_batch_kernel(const GemvBatch p) {
  __shared__ RouteScratch route_sh;
  __shared__ int route_ids[kMaxRouteK];
  __shared__ float route_w[kMaxRouteK];
  pdl_wait();
  pdl_launch_dependents();
  int b = blockIdx.x, j = 0;
  while (j + 1 < p.njobs && b >= p.block_start[j + 1]) j++;
  const GemvJob& job = p.jobs[j];
  b -= p.block_start[j];
  const int rb = job_row_blocks(job);
  const int group = b / rb;
  const int r = (b - group * rb) * kGemvWarps + (threadIdx.x >> 5);
  const bool vec = job.vec;
  if (job.table) {
    int e;
    if (p.route.logits) {
      // This block routes the token itself (warp 0), so that the router logits feed the experts without a launch.
      if (threadIdx.x < 32) route_token_warp(p.route, 0, route_sh, route_ids, route_w);
      __syncthreads();
      if (b == 0 && threadIdx.x < p.route.K) {
        job.route_ids_out[threadIdx.x] = route_ids[threadIdx.x];
        job.route_w_out[threadIdx.x] = route_w[threadIdx.x];
      }
      e = route_ids[group];
    } else {
      e = job.ids[group];
    }
    if (r >= job.w.rows) return;
    const DevWeight w = job.table[e];
    DevWeight upw;
    if (job.up_table) upw = job.up_table[e];
    const float* xr[1] = {p.x + static_cast<size_t>(group / job.x_div) * p.ldx};
    job_rows<1>(job, w, job.up_table ? &upw : nullptr, r, xr, 1, group, p.norm_w, p.norm_dim, p.eps, vec);
    return;
  }
  if (r >= job.w.rows) return;
  const int m0 = group * TM;
  const int mc = min(TM, p.M - m0);
  const float* xr[TM];
#pragma unroll
  for (int i = 0; i < TM; i++) xr[i] = p.x + static_cast<size_t>(m0 + min(i, mc - 1)) * p.ldx;
  job_rows<TM>(job, job.w, job.up.data ? &job.up : nullptr, r, xr, mc, m0, p.norm_w, p.norm_dim, p.eps, vec);
}

// out[r] += Σ_j wts[j] · (g[j] · down[ids[j]][r]) (+ gs · shared_down[r]); one warp per row r, one token.
__global__ void __launch_bounds__(kGemvWarps * 32) moe_down_combine_kernel(const MoeDownParams p) {
  pdl_wait();
  pdl_launch_dependents();
  const int t = blockIdx.y;
  const int r = blockIdx.x * kGemvWarps + (threadIdx.x >> 5);
  if (r >= p.shape.rows) return;
  float total = 0.0f;
  float acc[1], acc2[1], ss[1];
  for (int j = 0; j <= p.K; j++) {
    DevWeight w;
    const float* xr[1];
    float scale = 1.0f;
    if (j < p.K) {
      const int slot = t * p.K + j;
      w = p.table[p.ids[slot]];
      xr[0] = p.g + static_cast<size_t>(slot) * p.ldg;
      scale = p.wts[slot];
    } else {
      if (!p.shared_down.data) break;
      w = p.shared_down;
      xr[0] = p.gs + static_cast<size_t>(t) * p.ldgs;
    }
    acc[0] = acc2[0] = ss[0] = 0.0f;
    const bool vec = j < p.K ? p.vec : p.vec_shared;
#define GLANCE_DOTS(DT)                                                                 \
  if (vec) lane_dots<DT, 1, true, false>(w, nullptr, r, xr, nullptr, acc, acc2, ss);    \
  else lane_dots<DT, 1, false, false>(w, nullptr, r, xr, nullptr, acc, acc2, ss);
    switch (w.dtype) {
      case kF32: GLANCE_DOTS(kF32) break;
      case kBF16: GLANCE_DOTS(kBF16) break;
      case kF16: GLANCE_DOTS(kF16) break;
      default: GLANCE_DOTS(kF8E4M3) break;
    }
#undef GLANCE_DOTS
    total += scale * warp_sum(acc[0]);
  }
  if ((threadIdx.x & 31) == 0) {
    float* o = p.out + static_cast<size_t>(t) * p.ldo + r;
    *o += total;
  }
}

}  // namespace

void gemv_batch(cudaStream_t s, GemvBatch b) {
  if (b.njobs <= 0 || b.njobs > kGemvBatchJobs) throw std::invalid_argument("gemv_batch: 1.." + std::to_string(kGemvBatchJobs) + " jobs");
  if (b.M <= 0) throw std::invalid_argument("gemv_batch: M must be ≥ 1");
  if (b.norm_w && (b.norm_dim <= 0 || b.norm_dim != b.jobs[0].w.cols))
    throw std::invalid_argument("gemv_batch: norm_dim must equal the weights' cols");
  if (b.route.logits && (b.route.E > kMaxRouteExperts || b.route.K > kMaxRouteK || b.route.n_group > kMaxRouteGroups || b.M != 1))
    throw std::invalid_argument("gemv_batch: routing supports E ≤ 512, K ≤ 16, 64 groups, one token");
  const int tm = b.M == 1 ? 1 : b.M == 2 ? 2 : 4;
  int blocks = 0;
  for (int j = 0; j < b.njobs; j++) {
    GemvJob& job = b.jobs[j];
    if (job.w.cols != b.jobs[0].w.cols) throw std::invalid_argument("gemv_batch: jobs must share the input width");
    if (job.up.data && (job.up.rows != job.w.rows || job.up.cols != job.w.cols || job.up.dtype != job.w.dtype))
      throw std::invalid_argument("gemv_batch: gate and up differ in shape or dtype");
    const bool vx = job.w.cols % 8 == 0 && b.ldx % 4 == 0 && aligned16(b.x) && (!b.norm_w || aligned16(b.norm_w));
    // Expert tensors are separate cudaMalloc allocations (256-byte aligned).
    job.vec = vx && (job.table || (aligned16(job.w.data) && (!job.up.data || aligned16(job.up.data))));
    int groups;
    if (job.table) {
      if (job.slots <= 0 || job.x_div <= 0) throw std::invalid_argument("gemv_batch: grouped job without slots");
      if (b.route.logits && job.slots != b.route.K) throw std::invalid_argument("gemv_batch: routed job needs K slots");
      groups = job.slots;
    } else {
      groups = (b.M + tm - 1) / tm;
    }
    b.block_start[j] = blocks;
    blocks += ((job.w.rows + kGemvWarps - 1) / kGemvWarps) * groups;
  }
  b.block_start[b.njobs] = blocks;
  if (blocks == 0) return;
  const char* name = "gemv_batch_kernel";
  if (tm == 1) launch_kernel(name, gemv_batch_kernel<1>, dim3(blocks), dim3(kGemvWarps * 32), 0, s, b);
  else if (tm == 2) launch_kernel(name, gemv_batch_kernel<2>, dim3(blocks), dim3(kGemvWarps * 32), 0, s, b);
  else launch_kernel(name, gemv_batch_kernel<4>, dim3(blocks), dim3(kGemvWarps * 32), 0, s, b);
}

void moe_down_combine(cudaStream_t s, MoeDownParams p, int T) {
  if (T <= 0 || p.shape.rows <= 0) return;
  if (p.K > kMaxRouteK) throw std::invalid_argument("moe_down_combine: K above 16");
  if (p.shared_down.data && p.shared_down.rows != p.shape.rows)
    throw std::invalid_argument("moe_down_combine: the shared expert's down projection has another output width");
  p.vec = p.shape.cols % 8 == 0 && p.ldg % 4 == 0 && aligned16(p.g);
  p.vec_shared = p.shared_down.data && p.shared_down.cols % 8 == 0 && p.ldgs % 4 == 0 && aligned16(p.gs) &&
                 aligned16(p.shared_down.data);
  const dim3 grid((p.shape.rows + kGemvWarps - 1) / kGemvWarps, T);
  launch_kernel("moe_down_combine_kernel", moe_down_combine_kernel, grid, dim3(kGemvWarps * 32), 0, s, p);
}

// ---- the single-job forms -------------------------------------------------------------------------------------
void gemv(cudaStream_t s, float* out, int ldo, const float* x, int ldx, int M, const DevWeight& w, bool accumulate) {
  if (M <= 0 || w.rows <= 0) return;
  GemvBatch b;
  b.x = x;
  b.ldx = ldx;
  b.M = M;
  b.njobs = 1;
  b.jobs[0].w = w;
  b.jobs[0].out = out;
  b.jobs[0].ldo = ldo;
  b.jobs[0].accumulate = accumulate;
  gemv_batch(s, b);
}

namespace {
// One grouped job over M slots, each its own group; the batch's M (activation rows) is only bounded for plain jobs.
GemvBatch grouped_batch(float* out, int ldo, const float* x, int ldx, int x_div, int M, const DevWeight* table,
                        const int* ids, const DevWeight& shape) {
  GemvBatch b;
  b.x = x;
  b.ldx = ldx;
  b.M = 1;
  b.njobs = 1;
  GemvJob& j = b.jobs[0];
  j.w = shape;
  j.table = table;
  j.ids = ids;
  j.slots = M;
  j.x_div = x_div;
  j.out = out;
  j.ldo = ldo;
  return b;
}
}  // namespace

void grouped_gemv(cudaStream_t s, float* out, int ldo, const float* x, int ldx, int x_div, int M,
                  const DevWeight* table, const int* ids, const DevWeight& shape) {
  if (M <= 0 || shape.rows <= 0) return;
  gemv_batch(s, grouped_batch(out, ldo, x, ldx, x_div, M, table, ids, shape));
}

void gemv_swiglu(cudaStream_t s, float* out, int ldo, const float* x, int ldx, int M, const DevWeight& gate, const DevWeight& up) {
  if (M <= 0 || gate.rows <= 0) return;
  GemvBatch b;
  b.x = x;
  b.ldx = ldx;
  b.M = M;
  b.njobs = 1;
  b.jobs[0].w = gate;
  b.jobs[0].up = up;
  b.jobs[0].out = out;
  b.jobs[0].ldo = ldo;
  gemv_batch(s, b);
}

void grouped_gemv_swiglu(cudaStream_t s, float* out, int ldo, const float* x, int ldx, int x_div, int M,
                         const DevWeight* gate_table, const DevWeight* up_table, const int* ids, const DevWeight& shape) {
  if (M <= 0 || shape.rows <= 0) return;
  GemvBatch b = grouped_batch(out, ldo, x, ldx, x_div, M, gate_table, ids, shape);
  b.jobs[0].up_table = up_table;
  gemv_batch(s, b);
}

}  // namespace cuda
}  // namespace glance
