// Matrix products of the forward pass: out[m, r] = Σ_c x[m, c] · W[r, c] (nn.Linear, W stored [out, in]).
//
// cuBLAS is not in this CUDA toolkit and is not loaded at run time: the kernels are ours. The decode GEMVs (M ≤ 8)
// are in gemv.cu; this file holds the prefill GEMM and linear(), which picks between them.
// - GEMM: tensor cores through mma.sync.m16n8k16 bf16 (sm_80+, also on sm_90a). A 64×64 output tile per
//   128-thread block, k-steps of 32; the activation tile and the dequantised weight tile are converted to bf16 while
//   staging into shared memory (so FP8 weights are never expanded in device memory), fp32 accumulation. Precision:
//   plain bf16 operands, or split bf16 (hi + lo parts, 2–3 MMAs per product: fp32-grade, the default of the runner,
//   because the indexer's top-k selection is sensitive to rounding at near-ties).
//   Register double-buffering overlaps the next tile's global loads with the current tile's MMAs.
// The grouped variant serves the MoE experts: it walks a device-built tile list {expert, m0, m1}.
#include <stdexcept>
#include <string>

#include "model_ops.cuh"
#include "weights.cuh"

namespace glance {
namespace cuda {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw_cuda_error(e, what, __FILE__, __LINE__);
}

namespace {

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// ---- tensor-core GEMM --------------------------------------------------------------------------------------
constexpr int BM = kGemmTileM, BN = 64, BK = 32, kPad = 8, kGemmThreads = 128;

struct GemmParams {
  const float* x;
  int ldx;
  const int* x_rows;
  float* out;
  int ldo;
  int M;
  DevWeight w;
  const DevWeight* table;
  const int4* tiles;
  const int* num_tiles;
  bool accumulate;
  bool vec_x;  // ldx % 4 == 0, x 16-byte aligned, K % 8 == 0
};

__device__ __forceinline__ uint32_t pack_bf16(float a, float b) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&h);
}

__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Each thread stages 2 groups of 8 values of A (rows of x) and 2 of B (rows of W) per k-step:
// group id = tid + 128·j → row = id / 4 (0..63), k offset = (id % 4) · 8.
// SPLIT: each operand is held as hi + lo bf16 parts (x ≈ hi + lo to ~2^-16) and a product takes three MMAs
// (hi·hi + hi·lo + lo·hi; two when the weight is bf16, whose lo part is zero): fp32-grade results (≈1e-5 relative)
// at 2–3× the tensor-core work. Without SPLIT, operands are rounded to bf16 (≈4e-3 relative per product).
template <int DT, bool VECW, bool SPLIT>
__global__ void __launch_bounds__(kGemmThreads) gemm_kernel(const GemmParams p) {
  constexpr int NP = SPLIT ? 2 : 1;  // parts per operand
  constexpr bool B_LO = SPLIT && DT != kBF16;
  __shared__ __align__(16) uint16_t As[NP][BM][BK + kPad];
  __shared__ __align__(16) uint16_t Bs[NP][BN][BK + kPad];
  int m_begin = blockIdx.x * BM, m_end = p.M;
  DevWeight w = p.w;
  if (p.tiles) {
    if (static_cast<int>(blockIdx.x) >= *p.num_tiles) return;
    const int4 t = p.tiles[blockIdx.x];
    w = p.table[t.x];
    m_begin = t.y;
    m_end = t.z;
  }
  const int n_begin = blockIdx.y * BN;
  if (n_begin >= w.rows || m_begin >= m_end) return;
  const int K = w.cols, N = w.rows;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;  // warp's 32×32 sub-tile
  const int g = lane >> 2, c4 = lane & 3;

  // Row pointers of the two A rows / two B rows this thread stages.
  const float* arow[2];
  bool a_ok[2];
  int b_row[2];
  bool b_ok[2];
  int koff[2];
#pragma unroll
  for (int j = 0; j < 2; j++) {
    const int id = tid + kGemmThreads * j;
    const int row = id >> 2;
    koff[j] = (id & 3) * 8;
    const int m = m_begin + row;
    a_ok[j] = m < m_end;
    const int phys = a_ok[j] ? (p.x_rows ? __ldg(p.x_rows + m) : m) : 0;
    arow[j] = p.x + static_cast<size_t>(phys) * p.ldx;
    b_row[j] = n_begin + row;
    b_ok[j] = b_row[j] < N;
  }

  float acc[2][4][4];
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

  float av[2][8], bv[2][8];
  auto load_tile = [&](int k0) {
#pragma unroll
    for (int j = 0; j < 2; j++) {
      const int k = k0 + koff[j];
      if (a_ok[j] && p.vec_x && k + 8 <= K) {
        const float4 u = __ldg(reinterpret_cast<const float4*>(arow[j] + k));
        const float4 v = __ldg(reinterpret_cast<const float4*>(arow[j] + k + 4));
        av[j][0] = u.x; av[j][1] = u.y; av[j][2] = u.z; av[j][3] = u.w;
        av[j][4] = v.x; av[j][5] = v.y; av[j][6] = v.z; av[j][7] = v.w;
      } else {
#pragma unroll
        for (int e = 0; e < 8; e++) av[j][e] = (a_ok[j] && k + e < K) ? __ldg(arow[j] + k + e) : 0.0f;
      }
      if (b_ok[j] && VECW && k + 8 <= K) {
        wload8<DT>(w, b_row[j], k, bv[j]);
      } else {
#pragma unroll
        for (int e = 0; e < 8; e++) bv[j][e] = (b_ok[j] && k + e < K) ? wload(w, b_row[j], k + e) : 0.0f;
      }
    }
  };
  // hi = bf16(v); lo = bf16(v − hi)
  auto pack8 = [](const float v[8], uint4& hi, uint4& lo) {
    uint32_t h[4], l[4];
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const __nv_bfloat162 b = __floats2bfloat162_rn(v[2 * e], v[2 * e + 1]);
      h[e] = *reinterpret_cast<const uint32_t*>(&b);
      if (SPLIT) {
        const float2 f = __bfloat1622float2(b);
        l[e] = pack_bf16(v[2 * e] - f.x, v[2 * e + 1] - f.y);
      }
    }
    hi = make_uint4(h[0], h[1], h[2], h[3]);
    if (SPLIT) lo = make_uint4(l[0], l[1], l[2], l[3]);
  };
  auto store_tile = [&]() {
#pragma unroll
    for (int j = 0; j < 2; j++) {
      const int row = (tid + kGemmThreads * j) >> 2;
      uint4 ah, al, bh, bl;
      pack8(av[j], ah, al);
      pack8(bv[j], bh, bl);
      *reinterpret_cast<uint4*>(&As[0][row][koff[j]]) = ah;
      *reinterpret_cast<uint4*>(&Bs[0][row][koff[j]]) = bh;
      if (SPLIT) {
        *reinterpret_cast<uint4*>(&As[NP - 1][row][koff[j]]) = al;
        if (B_LO) *reinterpret_cast<uint4*>(&Bs[NP - 1][row][koff[j]]) = bl;
      }
    }
  };

  load_tile(0);
  for (int k0 = 0; k0 < K; k0 += BK) {
    __syncthreads();  // previous MMAs done reading shared memory
    store_tile();
    __syncthreads();
    if (k0 + BK < K) load_tile(k0 + BK);  // in flight during the MMAs below
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      uint32_t a[NP][2][4], b[NP][4][2];
#pragma unroll
      for (int q = 0; q < NP; q++) {
#pragma unroll
        for (int i = 0; i < 2; i++) {
          const int r0 = wm + i * 16 + g;
          a[q][i][0] = *reinterpret_cast<const uint32_t*>(&As[q][r0][kk + 2 * c4]);
          a[q][i][1] = *reinterpret_cast<const uint32_t*>(&As[q][r0 + 8][kk + 2 * c4]);
          a[q][i][2] = *reinterpret_cast<const uint32_t*>(&As[q][r0][kk + 2 * c4 + 8]);
          a[q][i][3] = *reinterpret_cast<const uint32_t*>(&As[q][r0 + 8][kk + 2 * c4 + 8]);
        }
        if (q == 0 || B_LO) {
#pragma unroll
          for (int j = 0; j < 4; j++) {
            const int n0 = wn + j * 8 + g;
            b[q][j][0] = *reinterpret_cast<const uint32_t*>(&Bs[q][n0][kk + 2 * c4]);
            b[q][j][1] = *reinterpret_cast<const uint32_t*>(&Bs[q][n0][kk + 2 * c4 + 8]);
          }
        }
      }
#pragma unroll
      for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
          if (SPLIT) {
            mma_bf16(acc[i][j], a[NP - 1][i], b[0][j]);            // lo · hi
            if (B_LO) mma_bf16(acc[i][j], a[0][i], b[NP - 1][j]);  // hi · lo
          }
          mma_bf16(acc[i][j], a[0][i], b[0][j]);  // hi · hi
        }
    }
  }

  // C fragment: (g, 2c4..2c4+1) and (g + 8, same).
#pragma unroll
  for (int i = 0; i < 2; i++) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int m = m_begin + wm + i * 16 + g + h * 8;
        if (m >= m_end) continue;
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const int n = n_begin + wn + j * 8 + 2 * c4 + e;
          if (n >= N) continue;
          float* o = p.out + static_cast<size_t>(m) * p.ldo + n;
          const float v = acc[i][j][2 * h + e];
          *o = p.accumulate ? *o + v : v;
        }
      }
    }
  }
}

template <int DT, bool SPLIT>
void launch_gemm_t(cudaStream_t s, const GemmParams& p, dim3 grid, bool vecw) {
  if (vecw) gemm_kernel<DT, true, SPLIT><<<grid, kGemmThreads, 0, s>>>(p);
  else gemm_kernel<DT, false, SPLIT><<<grid, kGemmThreads, 0, s>>>(p);
}

template <bool SPLIT>
void launch_gemm_p(cudaStream_t s, const GemmParams& p, int dtype, dim3 grid, bool vecw) {
  switch (dtype) {
    case kF32: launch_gemm_t<kF32, SPLIT>(s, p, grid, vecw); break;
    case kBF16: launch_gemm_t<kBF16, SPLIT>(s, p, grid, vecw); break;
    case kF16: launch_gemm_t<kF16, SPLIT>(s, p, grid, vecw); break;
    default: launch_gemm_t<kF8E4M3, SPLIT>(s, p, grid, vecw); break;
  }
}

void launch_gemm(cudaStream_t s, const GemmParams& p, int dtype, dim3 grid, bool vecw, GemmPrecision prec) {
  if (prec == GemmPrecision::kSplitBf16) launch_gemm_p<true>(s, p, dtype, grid, vecw);
  else launch_gemm_p<false>(s, p, dtype, grid, vecw);
}

}  // namespace

void gemm(cudaStream_t s, float* out, int ldo, const float* x, int ldx, int M, const DevWeight& w, bool accumulate,
          GemmPrecision prec) {
  if (M <= 0 || w.rows <= 0) return;
  GemmParams p{x, ldx, nullptr, out, ldo, M, w, nullptr, nullptr, nullptr, accumulate,
               ldx % 4 == 0 && aligned16(x) && w.cols % 8 == 0};
  const dim3 grid((M + BM - 1) / BM, (w.rows + BN - 1) / BN);
  launch_gemm(s, p, w.dtype, grid, w.cols % 8 == 0 && aligned16(w.data), prec);
  check(cudaGetLastError(), "gemm");
}

void linear(cudaStream_t s, float* out, int ldo, const float* x, int ldx, int M, const DevWeight& w, bool accumulate,
            GemmPrecision prec) {
  if (M <= kGemvMaxM) gemv(s, out, ldo, x, ldx, M, w, accumulate);
  else gemm(s, out, ldo, x, ldx, M, w, accumulate, prec);
}

void grouped_gemm(cudaStream_t s, float* out, int ldo, const float* x, int ldx, const int* x_rows,
                  const DevWeight* table, const int4* tiles, const int* num_tiles, int max_tiles, const DevWeight& shape,
                  GemmPrecision prec) {
  if (max_tiles <= 0 || shape.rows <= 0) return;
  GemmParams p{x, ldx, x_rows, out, ldo, 0, shape, table, tiles, num_tiles, false,
               ldx % 4 == 0 && aligned16(x) && shape.cols % 8 == 0};
  const dim3 grid(max_tiles, (shape.rows + BN - 1) / BN);
  launch_gemm(s, p, shape.dtype, grid, shape.cols % 8 == 0, prec);
  check(cudaGetLastError(), "grouped_gemm");
}

}  // namespace cuda
}  // namespace glance
