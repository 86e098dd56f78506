// Split-KV merge (DESIGN §6), the one place its math lives on the GPU:
//   lse = log(sum_s exp(lse_s)),  out = sum_s exp(lse_s - lse) * out_s,
// where a part with lse_s = -inf (a split that saw no allowed key) adds
// nothing, and a row whose every part is -inf gets out = 0, lse = -inf.
// The sink logit joins the denominator here, once, after the merge:
//   out *= exp(lse) / (exp(lse) + exp(sink)) = 1 / (1 + exp(sink - lse)).
// The LSE written is the merged one, without the sink (as the unsplit path).
//
// Used by the split-KV epilogue of flash_fwd_kernel (forward_kernel.cuh): the
// last CTA of a work unit to finish merges every split of the unit's rows.
// Partials are read with ld.global.cg (L2, not the SM's L1): they were
// written by other CTAs of the same launch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "attnkit/cuda/mma.cuh"

namespace attnkit::cuda::detail {

__device__ __forceinline__ float lse_neg_inf() { return -__int_as_float(0x7f800000); }

// Running log-sum-exp state (m, l), value m + log(l): part (m2, l2) folded in.
// A part with m2 = -inf adds nothing; (-inf, 0) is "no part yet".
__device__ __forceinline__ void lse_add(float& m, float& l, float m2, float l2) {
  const float mn = fmaxf(m, m2);
  if (mn == lse_neg_inf()) return;
  l = l * __expf(m - mn) + l2 * __expf(m2 - mn);  // exp(-inf) = 0
  m = mn;
}
__device__ __forceinline__ float lse_value(float m, float l) { return m == lse_neg_inf() ? m : m + __logf(l); }
// Weight of a part in the merged output (0 for a -inf part; lse finite).
__device__ __forceinline__ float lse_weight(float lse_part, float lse) { return __expf(lse_part - lse); }
// The sink's share of the denominator, applied once after the merge.
__device__ __forceinline__ float sink_scale(const float* sink, float lse) {
  return sink ? 1.f / (1.f + __expf(*sink - lse)) : 1.f;
}

// One output row to merge: its split-0 partial (lse, out), where it goes, and
// its head's sink logit (nullptr: none).
template <class T>
struct SplitRow {
  const float* lse = nullptr;  // split s at lse[s * stride]
  const float* out = nullptr;  // split s at out[s * stride * D], D floats
  T* dst = nullptr;
  float* lse_dst = nullptr;  // nullptr: no LSE output
  const float* sink = nullptr;
};

// Merges `S` partials (part s of a row at row.lse + s * stride, row.out +
// s * stride * D) of rows [0, nrows) with one warp; row_at(k) returns
// SplitRow k. kFinal: writes the output row (storage type, sink applied) and
// the LSE output; else writes the merged partial (fp32, no sink) in place
// of part 0, for a later merge (the two-level split merge). kRB rows at a
// time, so a lane keeps kRB x kPer float4 loads in flight per part. Lanes
// own float4 columns; at D = 64 the two half-warps take alternate parts.
template <class T, int D, bool kFinal, int kRB = 4, class RowAt>
__device__ __forceinline__ void merge_split_rows_warp(int lane, int nrows, int S, int64_t stride, RowAt row_at) {
  constexpr int kCols = D / 4;  // float4 columns of a row
  constexpr int kLanes = kCols >= 32 ? 32 : (32 % kCols == 0 ? kCols : 32);
  constexpr int kGroups = 32 / kLanes;  // splits taken side by side
  constexpr int kPer = (kCols + kLanes - 1) / kLanes;
  const int grp = lane / kLanes, col0 = lane % kLanes;
  for (int rb = 0; rb < nrows; rb += kRB) {
    SplitRow<T> rw[kRB];
    bool ok[kRB];
#pragma unroll
    for (int k = 0; k < kRB; ++k) {
      ok[k] = rb + k < nrows;
      if (ok[k]) rw[k] = row_at(rb + k);
    }
    // Pass 1: the merged LSE of each row (lanes over splits, then the warp).
    float m[kRB], l[kRB], lse[kRB];
#pragma unroll
    for (int k = 0; k < kRB; ++k) m[k] = lse_neg_inf(), l[k] = 0.f;
    for (int sp = lane; sp < S; sp += 32) {
#pragma unroll
      for (int k = 0; k < kRB; ++k)
        if (ok[k]) lse_add(m[k], l[k], __ldcg(rw[k].lse + sp * stride), 1.f);
    }
#pragma unroll
    for (int k = 0; k < kRB; ++k) {
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m[k], off), l2 = __shfl_xor_sync(0xffffffffu, l[k], off);
        lse_add(m[k], l[k], m2, l2);
      }
      lse[k] = lse_value(m[k], l[k]);
    }
    // Pass 2: out = sum_s w_s out_s; a lane holds the weights of split
    // c0 + lane, shuffled to the warp split by split.
    float4 acc[kRB][kPer];
#pragma unroll
    for (int k = 0; k < kRB; ++k)
#pragma unroll
      for (int c = 0; c < kPer; ++c) acc[k][c] = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int c0 = 0; c0 < S; c0 += 32) {
      const int sp = c0 + lane;
      float w[kRB];
#pragma unroll
      for (int k = 0; k < kRB; ++k)
        w[k] = ok[k] && sp < S && lse[k] != lse_neg_inf() ? lse_weight(__ldcg(rw[k].lse + sp * stride), lse[k]) : 0.f;
      const int n = S - c0 < 32 ? S - c0 : 32;
#pragma unroll 4
      for (int jj = 0; jj < n; jj += kGroups) {
        const int j = jj + grp;
#pragma unroll
        for (int k = 0; k < kRB; ++k) {
          const float wj = __shfl_sync(0xffffffffu, w[k], j & 31);
          if (ok[k] && j < n) {
            const float4* src = reinterpret_cast<const float4*>(rw[k].out + (c0 + j) * stride * D);
#pragma unroll
            for (int c = 0; c < kPer; ++c) {
              const int col = col0 + c * kLanes;
              if (col < kCols) {
                const float4 x = __ldcg(src + col);
                acc[k][c].x += wj * x.x, acc[k][c].y += wj * x.y, acc[k][c].z += wj * x.z, acc[k][c].w += wj * x.w;
              }
            }
          }
        }
      }
    }
    if constexpr (!kFinal) __syncwarp();  // every lane has read part 0's LSE before lane 0 rewrites it
#pragma unroll
    for (int k = 0; k < kRB; ++k) {
      if (!ok[k]) continue;
      const bool empty = lse[k] == lse_neg_inf();  // every part -inf: out 0, lse -inf
      const float post = empty ? 0.f : (kFinal ? sink_scale(rw[k].sink, lse[k]) : 1.f);
#pragma unroll
      for (int c = 0; c < kPer; ++c) {
        float4 x = acc[k][c];
#pragma unroll
        for (int off = kLanes; off < 32; off <<= 1) {
          x.x += __shfl_xor_sync(0xffffffffu, x.x, off), x.y += __shfl_xor_sync(0xffffffffu, x.y, off);
          x.z += __shfl_xor_sync(0xffffffffu, x.z, off), x.w += __shfl_xor_sync(0xffffffffu, x.w, off);
        }
        const int col = col0 + c * kLanes;
        if (grp == 0 && col < kCols) {
          if constexpr (kFinal) {
            const uint2 v =
                make_uint2(MmaOps<T>::pack(x.x * post, x.y * post), MmaOps<T>::pack(x.z * post, x.w * post));
            *reinterpret_cast<uint2*>(rw[k].dst + 4 * col) = v;  // 8-byte aligned: rows are 16-byte aligned
          } else {
            // Part 0's columns, read only by this lane (group 0 owns part 0).
            reinterpret_cast<float4*>(const_cast<float*>(rw[k].out))[col] =
                make_float4(x.x * post, x.y * post, x.z * post, x.w * post);
          }
        }
      }
      if constexpr (kFinal) {
        if (lane == 0 && rw[k].lse_dst) *rw[k].lse_dst = lse[k];
      } else {
        if (lane == 0) *const_cast<float*>(rw[k].lse) = lse[k];
      }
    }
  }
}

}  // namespace attnkit::cuda::detail
