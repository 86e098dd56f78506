// RoPE on the GPU, unfused: one pass rotates q and k into workspace copies
// (one thread per rotary pair, angles from rope::frequencies.hpp's fp32-accurate
// reduced angles, the same math as the CPU). The attention front door fuses
// RoPE into the flash kernel instead (rope_fused.cuh); this pass stays for
// callers that need the rotated tensors themselves (MoBA's gate averages
// rotated keys) and as the baseline the fused kernel is measured against.
// Absolute positions only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "attnkit/rope/config.hpp"

#include "attnkit/core/params.hpp"
#include "attnkit/cuda/check.cuh"
#include "attnkit/cuda/mma.cuh"
#include "attnkit/rope/frequencies.hpp"

namespace attnkit::cuda {

namespace detail {

// Rows of one operand: sequence b, row r (< its valid length), head h.
// dst is contiguous [rows, H, D] in the operand's own row numbering
// (padded: b * capacity + r; varlen: start_b + r).
template <class T>
__global__ void rope_rotate_kernel(const AttentionParams<T> p, const rope::RopeParams rp, bool is_q, T* dst,
                                   int64_t heads, int64_t capacity) {
  using Ops = MmaOps<T>;
  const ProblemShape& s = p.shape;
  const int64_t D = s.head_dim;
  const int64_t b = blockIdx.z;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  const int64_t h = blockIdx.y;
  const int64_t len = is_q ? clamp_len(s.q_len(b), s.q_capacity) : clamp_len(s.kv_len(b), s.kv_capacity);
  if (r >= len) return;
  const T* src = is_q ? p.q_row(b, r, h) : p.k_row(b, r, h);
  const int64_t row = (s.varlen() ? (is_q ? s.q_start(b) : s.kv_start(b)) : b * capacity) + r;
  T* out = dst + (row * heads + h) * D;
  const double pos = static_cast<double>(is_q ? p.q_position(b, r) : p.kv_position(b, r));
  for (int i = threadIdx.x; i < D / 2; i += blockDim.x) {
    if (i < rp.pairs) {
      const int ia = rp.style == RopeStyle::Interleaved ? 2 * i : i;
      const int ib = rp.style == RopeStyle::Interleaved ? 2 * i + 1 : i + rp.pairs;
      float sn, cs;
      rope::sincos_reduced(rope::reduced_angle(pos, rp.inv_freq[i]), &sn, &cs);
      cs *= rp.attention_scaling;
      sn *= rp.attention_scaling;
      const float x0 = Ops::load(src + ia), x1 = Ops::load(src + ib);
      Ops::store(out + ia, x0 * cs - x1 * sn);
      Ops::store(out + ib, x0 * sn + x1 * cs);
    } else {
      // Dims past the rotary ones are copied (pairs i >= R/2 cover dims >= R).
      const int d0 = 2 * i;
      out[d0] = src[d0];
      out[d0 + 1] = src[d0 + 1];
    }
  }
}

}  // namespace detail

// Rotated copies of q and k; returns params that read them. The workspace is
// allocated on `stream` from `pool` and must be freed by the caller after the
// attention launch (*ws).
template <class T>
AttentionParams<T> rope_prepass(const AttentionParams<T>& p, const rope::RopeParams& rp, cudaStream_t stream,
                                cudaMemPool_t pool, void** ws) {
  const ProblemShape& s = p.shape;
  const int64_t D = s.head_dim;
  const int64_t q_rows = s.varlen() ? s.total_q : s.batch * s.q_capacity;
  int64_t k_rows = s.batch * s.kv_capacity;
  if (s.varlen()) {
    // The packed key total lives on the device (cu_seqlens_k[B]): one small
    // synchronous read, paid only by varlen calls with RoPE.
    int32_t total = 0;
    detail::check(cudaMemcpyAsync(&total, s.cu_k + s.batch, sizeof(int32_t), cudaMemcpyDeviceToHost, stream),
                  "cudaMemcpyAsync (cu_seqlens_k[batch])");
    detail::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    k_rows = total;
  }
  const size_t q_elems = static_cast<size_t>(q_rows * s.q_heads * D),
               k_elems = static_cast<size_t>(k_rows * s.kv_heads * D);
  detail::check(cudaMallocFromPoolAsync(ws, (q_elems + k_elems) * sizeof(T) + 16, pool, stream),
                "cudaMallocFromPoolAsync (RoPE workspace)");
  T* q_rot = static_cast<T*>(*ws);
  T* k_rot = q_rot + q_elems;
  const dim3 block(32, 4);
  if (s.q_capacity > 0 && s.q_heads > 0 && s.batch > 0) {
    const dim3 grid(static_cast<unsigned>((s.q_capacity + 3) / 4), static_cast<unsigned>(s.q_heads),
                    static_cast<unsigned>(s.batch));
    detail::rope_rotate_kernel<T><<<grid, block, 0, stream>>>(p, rp, true, q_rot, s.q_heads, s.q_capacity);
    detail::check_launch("rope_rotate_kernel (q)");
  }
  if (s.kv_capacity > 0 && s.batch > 0) {
    const dim3 grid(static_cast<unsigned>((s.kv_capacity + 3) / 4), static_cast<unsigned>(s.kv_heads),
                    static_cast<unsigned>(s.batch));
    detail::rope_rotate_kernel<T><<<grid, block, 0, stream>>>(p, rp, false, k_rot, s.kv_heads, s.kv_capacity);
    detail::check_launch("rope_rotate_kernel (k)");
  }
  AttentionParams<T> r = p;
  r.q = q_rot;
  r.k = k_rot;
  if (s.varlen()) {
    r.q_layout = {0, s.q_heads * D, D};
    r.k_layout = {0, s.kv_heads * D, D};
  } else {
    r.q_layout = {s.q_capacity * s.q_heads * D, s.q_heads * D, D};
    r.k_layout = {s.kv_capacity * s.kv_heads * D, s.kv_heads * D, D};
  }
  return r;
}

}  // namespace attnkit::cuda
