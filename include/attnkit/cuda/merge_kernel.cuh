// Folds split-KV partials into the output (DESIGN §6):
//   lse = log(sum_s exp(lse_s)),  out = sum_s exp(lse_s - lse) * out_s,
// where a part with lse_s = -inf (a split that saw no allowed key) adds
// nothing, and a row whose every part is -inf gets out = 0, lse = -inf.
// The sink logit joins the denominator here, once, after the merge:
//   out *= exp(lse) / (exp(lse) + exp(sink)) = 1 / (1 + exp(sink - lse)).
#pragma once

#include <cuda_runtime.h>

#include "attnkit/cuda/forward_kernel.cuh"

namespace attnkit::cuda {

inline constexpr int kMergeWarps = 4;

namespace detail {
// Block-wide reduction over kMergeWarps warps (op: max or sum).
template <class Op>
__device__ __forceinline__ float merge_reduce(float x, float* red, Op op) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x = op(x, __shfl_xor_sync(0xffffffffu, x, off));
  __syncthreads();  // `red` may still be read from the previous reduction
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = x;
  __syncthreads();
  x = red[0];
#pragma unroll
  for (int w = 1; w < kMergeWarps; ++w) x = op(x, red[w]);
  return x;
}
}  // namespace detail

// One CTA per (query row, head): grid (Sq * Hq, B). The warps share out the
// splits; each lane owns 4 consecutive output columns, so every partial row
// is read with 16-byte loads and many loads are in flight at once.
template <class T, int D>
__global__ void __launch_bounds__(32 * kMergeWarps) merge_splits_kernel(const FwdArgs<T> a) {
  using Ops = detail::MmaOps<T>;
  constexpr int kVec = D / 4;             // float4 columns
  constexpr int kPer = (kVec + 31) / 32;  // per lane
  __shared__ float red[kMergeWarps];
  __shared__ float4 part[kMergeWarps][kVec];
  const AttentionParams<T>& p = a.p;
  const ProblemShape& s = p.shape;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t b = blockIdx.y;
  const int64_t i = blockIdx.x / s.q_heads, h = blockIdx.x % s.q_heads;
  const int64_t q_len = detail::clamp_len(s.q_len(b), s.q_capacity);
  const int64_t row_limit = s.varlen() ? q_len : s.q_capacity;
  if (i >= row_limit) return;
  const int64_t grow = s.varlen() ? s.q_start(b) + i : b * s.q_capacity + i;
  const int64_t stride = a.ws_rows * s.q_heads;  // between splits
  const int64_t base = grow * s.q_heads + h;
  const int S = a.num_splits;

  float mx = detail::neg_inf();
  for (int sp = threadIdx.x; sp < S; sp += 32 * kMergeWarps) mx = fmaxf(mx, a.ws_lse[base + sp * stride]);
  mx = detail::merge_reduce(mx, red, [](float x, float y) { return fmaxf(x, y); });
  T* dst = p.out_row(b, i, h);
  if (mx == detail::neg_inf()) {
    for (int d = threadIdx.x; d < D; d += 32 * kMergeWarps) Ops::store(dst + d, 0.f);
    if (threadIdx.x == 0 && p.lse) *p.lse_ptr(b, i, h) = detail::neg_inf();
    return;
  }
  float sum = 0.f;
  for (int sp = threadIdx.x; sp < S; sp += 32 * kMergeWarps) sum += __expf(a.ws_lse[base + sp * stride] - mx);
  sum = detail::merge_reduce(sum, red, [](float x, float y) { return x + y; });
  const float lse = mx + __logf(sum);

  float4 acc[kPer];
#pragma unroll
  for (int c = 0; c < kPer; ++c) acc[c] = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
  for (int sp = warp; sp < S; sp += kMergeWarps) {
    const float w = __expf(a.ws_lse[base + sp * stride] - lse);  // 0 for a -inf part
    const float4* src = reinterpret_cast<const float4*>(a.ws_out + (base + sp * stride) * D);
#pragma unroll
    for (int c = 0; c < kPer; ++c) {
      if (lane + 32 * c < kVec) {
        const float4 x = src[lane + 32 * c];
        acc[c].x += w * x.x, acc[c].y += w * x.y, acc[c].z += w * x.z, acc[c].w += w * x.w;
      }
    }
  }
#pragma unroll
  for (int c = 0; c < kPer; ++c)
    if (lane + 32 * c < kVec) part[warp][lane + 32 * c] = acc[c];
  __syncthreads();
  const float post = p.sink_logits ? 1.f / (1.f + __expf(p.sink_logits[h] - lse)) : 1.f;
  for (int c = threadIdx.x; c < kVec; c += 32 * kMergeWarps) {
    float4 x = part[0][c];
#pragma unroll
    for (int w = 1; w < kMergeWarps; ++w)
      x.x += part[w][c].x, x.y += part[w][c].y, x.z += part[w][c].z, x.w += part[w][c].w;
    Ops::store(dst + 4 * c, x.x * post);
    Ops::store(dst + 4 * c + 1, x.y * post);
    Ops::store(dst + 4 * c + 2, x.z * post);
    Ops::store(dst + 4 * c + 3, x.w * post);
  }
  if (threadIdx.x == 0 && p.lse) *p.lse_ptr(b, i, h) = lse;
}

}  // namespace attnkit::cuda
