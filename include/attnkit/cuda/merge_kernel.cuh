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

// One warp per (query row, head): grid (ceil(Sq * Hq / kMergeWarps), B).
template <class T>
__global__ void __launch_bounds__(32 * kMergeWarps) merge_splits_kernel(const FwdArgs<T> a) {
  using Ops = detail::MmaOps<T>;
  const AttentionParams<T>& p = a.p;
  const ProblemShape& s = p.shape;
  const int lane = threadIdx.x % 32;
  const int64_t b = blockIdx.y;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kMergeWarps + threadIdx.x / 32;
  const int64_t i = idx / s.q_heads, h = idx % s.q_heads;
  const int64_t q_len = detail::clamp_len(s.q_len(b), s.q_capacity);
  const int64_t row_limit = s.varlen() ? q_len : s.q_capacity;
  if (i >= row_limit) return;
  const int64_t grow = s.varlen() ? s.q_start(b) + i : b * s.q_capacity + i;
  const int64_t stride = a.ws_rows * s.q_heads;  // between splits
  const int64_t base = grow * s.q_heads + h;
  const int D = static_cast<int>(s.v_head_dim);

  float mx = detail::neg_inf();
  for (int sp = lane; sp < a.num_splits; sp += 32) mx = fmaxf(mx, a.ws_lse[base + sp * stride]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  T* dst = p.out_row(b, i, h);
  if (mx == detail::neg_inf()) {
    for (int d = lane; d < D; d += 32) Ops::store(dst + d, 0.f);
    if (lane == 0 && p.lse) *p.lse_ptr(b, i, h) = detail::neg_inf();
    return;
  }
  float sum = 0.f;
  for (int sp = lane; sp < a.num_splits; sp += 32) sum += __expf(a.ws_lse[base + sp * stride] - mx);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  const float lse = mx + __logf(sum);
  float post = 1.f;
  if (p.sink_logits) post = 1.f / (1.f + __expf(p.sink_logits[h] - lse));

  for (int d = lane; d < D; d += 32) {
    float acc = 0.f;
    for (int sp = 0; sp < a.num_splits; ++sp) {
      const float l = a.ws_lse[base + sp * stride];
      if (l == detail::neg_inf()) continue;
      acc += __expf(l - lse) * a.ws_out[(base + sp * stride) * D + d];
    }
    Ops::store(dst + d, acc * post);
  }
  if (lane == 0 && p.lse) *p.lse_ptr(b, i, h) = lse;
}

}  // namespace attnkit::cuda
