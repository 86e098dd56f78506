// Split-KV merge (DESIGN §6), the one place its math lives on the GPU:
//   lse = log(sum_s exp(lse_s)),  out = sum_s exp(lse_s - lse) * out_s,
// where a part with lse_s = -inf (a split that saw no allowed key) adds
// nothing, and a row whose every part is -inf gets out = 0, lse = -inf.
// The sink logit joins the denominator here, once, after the merge:
//   out *= exp(lse) / (exp(lse) + exp(sink)) = 1 / (1 + exp(sink - lse)).
// The LSE written is the merged one, without the sink (as the unsplit path).
//
// Used by merge_splits_kernel (a launch after the attention kernel: the
// default for flash_fwd_kernel's decode configuration) and by the split-KV
// epilogues of flash_decode_kernel (its default) and flash_fwd_kernel with
// DecodeTuning::in_kernel_merge (the last CTA of a work unit to finish merges
// every split of the unit's rows).
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

// Whether this CTA takes the last of `parties` tickets on *counter (the
// last one wraps the counter back to 0, ready for the next launch). Call it
// with every thread of the CTA after the CTA's partial stores; `flag` is a
// shared word. Ordering: the first barrier puts every thread's stores before
// thread 0's ticket, whose release (cumulative) publishes them at GPU scope;
// its acquire and the second barrier put every other CTA's published stores
// before this CTA's later loads. One acq_rel atomic by one thread instead of
// a fence by every thread and another after the ticket (the trace in
// bench/cuda/NOTES-decode.md, Session 7: that second fence alone was ~800
// cycles on the merging CTA's critical path).
__device__ __forceinline__ bool take_last_ticket(unsigned* counter, unsigned parties, volatile unsigned* flag) {
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned old = 0;
    asm volatile("atom.acq_rel.gpu.global.inc.u32 %0, [%1], %2;\n"
                 : "=r"(old)
                 : "l"(counter), "r"(parties - 1)
                 : "memory");
    *flag = old == parties - 1;
  }
  __syncthreads();
  return *flag != 0;
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
// of part 0, for a later merge (the two-level split merge).
// One pass, online: kRB rows x kPB parts are loaded at once (every LSE and
// partial row of the batch in flight together, one L2 round trip per
// batch), then folded in against the batch's maximum. Lanes own float4
// columns; at D = 64 the two half-warps take alternate parts and combine at
// the end. flash_fwd_kernel's in-kernel merge uses the default 2 x 4;
// flash_decode_kernel 1 x 8, one row per warp (255 registers without spills
// at D = 128, one CTA per SM either way; 1 x 16 measured no faster).
template <class T, int D, bool kFinal, int kRB = 2, int kPB = 4, class RowAt>
__device__ __forceinline__ void merge_split_rows_warp(int lane, int nrows, int S, int64_t stride, RowAt row_at) {
  constexpr int kCols = D / 4;  // float4 columns of a row
  constexpr int kLanes = kCols >= 32 ? 32 : (32 % kCols == 0 ? kCols : 32);
  constexpr int kGroups = 32 / kLanes;  // parts taken side by side
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
    float m[kRB], l[kRB];
    float4 acc[kRB][kPer];
#pragma unroll
    for (int k = 0; k < kRB; ++k) {
      m[k] = lse_neg_inf(), l[k] = 0.f;
#pragma unroll
      for (int c = 0; c < kPer; ++c) acc[k][c] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
    // Running pointers to this lane's next part (one 64-bit add per part,
    // not a product per part: the merge runs at one warp per scheduler,
    // where every instruction before its loads is latency).
    const int64_t step = kGroups * stride;
    const float* lse_at[kRB];
    const float4* out_at[kRB];
#pragma unroll
    for (int k = 0; k < kRB; ++k) {
      lse_at[k] = rw[k].lse + grp * stride;
      out_at[k] = reinterpret_cast<const float4*>(rw[k].out + grp * stride * D) + col0;
    }
    for (int s0 = grp; s0 < S; s0 += kPB * kGroups) {
      float ls[kRB][kPB];
      float4 x[kRB][kPB][kPer];
#pragma unroll
      for (int k = 0; k < kRB; ++k)
#pragma unroll
        for (int pb = 0; pb < kPB; ++pb) {
          const bool valid = ok[k] && s0 + pb * kGroups < S;
          ls[k][pb] = valid ? __ldcg(lse_at[k]) : lse_neg_inf();
#pragma unroll
          for (int c = 0; c < kPer; ++c)
            x[k][pb][c] =
                valid && col0 + c * kLanes < kCols ? __ldcg(out_at[k] + c * kLanes) : make_float4(0.f, 0.f, 0.f, 0.f);
          lse_at[k] += step;
          out_at[k] += step * (D / 4);
        }
        // Fold the batch in against its maximum: the parts' weights are then
        // independent of each other (one rescale of the running state per
        // batch, not a dependent max / exp / rescale chain per part).
#pragma unroll
      for (int k = 0; k < kRB; ++k) {
        float mb = m[k];
#pragma unroll
        for (int pb = 0; pb < kPB; ++pb) mb = fmaxf(mb, ls[k][pb]);
        if (mb == lse_neg_inf()) continue;  // nothing yet, and every part of the batch is absent
        const float a = __expf(m[k] - mb);  // exp(-inf) = 0
        float w[kPB];
#pragma unroll
        for (int pb = 0; pb < kPB; ++pb) w[pb] = __expf(ls[k][pb] - mb);
        float lw = 0.f;
#pragma unroll
        for (int pb = 0; pb < kPB; ++pb) lw += w[pb];
        l[k] = l[k] * a + lw;
        m[k] = mb;
#pragma unroll
        for (int c = 0; c < kPer; ++c) {
          float4 y = make_float4(acc[k][c].x * a, acc[k][c].y * a, acc[k][c].z * a, acc[k][c].w * a);
#pragma unroll
          for (int pb = 0; pb < kPB; ++pb) {
            const float4 xv = x[k][pb][c];
            y.x += w[pb] * xv.x, y.y += w[pb] * xv.y, y.z += w[pb] * xv.z, y.w += w[pb] * xv.w;
          }
          acc[k][c] = y;
        }
      }
    }
    if constexpr (!kFinal) __syncwarp();  // every lane has read part 0 before it is rewritten
#pragma unroll
    for (int k = 0; k < kRB; ++k) {
      if (!ok[k]) continue;  // warp-uniform
#pragma unroll
      for (int off = kLanes; off < 32; off <<= 1) {  // the half-warps' parts (D = 64)
        const float m2 = __shfl_xor_sync(0xffffffffu, m[k], off), l2 = __shfl_xor_sync(0xffffffffu, l[k], off);
        const float mn = fmaxf(m[k], m2);
        const float a = mn == lse_neg_inf() ? 0.f : __expf(m[k] - mn), b = mn == lse_neg_inf() ? 0.f : __expf(m2 - mn);
#pragma unroll
        for (int c = 0; c < kPer; ++c) {
          float4& y = acc[k][c];
          const float x0 = __shfl_xor_sync(0xffffffffu, y.x, off), x1 = __shfl_xor_sync(0xffffffffu, y.y, off);
          const float x2 = __shfl_xor_sync(0xffffffffu, y.z, off), x3 = __shfl_xor_sync(0xffffffffu, y.w, off);
          y.x = y.x * a + x0 * b, y.y = y.y * a + x1 * b, y.z = y.z * a + x2 * b, y.w = y.w * a + x3 * b;
        }
        l[k] = l[k] * a + l2 * b;
        m[k] = mn;
      }
      const float lse = lse_value(m[k], l[k]);
      const bool empty = lse == lse_neg_inf();  // every part -inf: out 0, lse -inf
      const float post = empty ? 0.f : (kFinal ? sink_scale(rw[k].sink, lse) : 1.f) / l[k];
#pragma unroll
      for (int c = 0; c < kPer; ++c) {
        const float4 y = acc[k][c];
        const int col = col0 + c * kLanes;
        if (grp == 0 && col < kCols) {
          if constexpr (kFinal) {
            const uint2 v =
                make_uint2(MmaOps<T>::pack(y.x * post, y.y * post), MmaOps<T>::pack(y.z * post, y.w * post));
            *reinterpret_cast<uint2*>(rw[k].dst + 4 * col) = v;  // 8-byte aligned: rows are 16-byte aligned
          } else {
            reinterpret_cast<float4*>(const_cast<float*>(rw[k].out))[col] =
                make_float4(y.x * post, y.y * post, y.z * post, y.w * post);
          }
        }
      }
      if constexpr (kFinal) {
        if (lane == 0 && rw[k].lse_dst) *rw[k].lse_dst = lse;
      } else {
        if (lane == 0) *const_cast<float*>(rw[k].lse) = lse;
      }
    }
  }
}

// The split merge as a kernel of its own (the default; DecodeTuning::
// in_kernel_merge runs merge_split_rows_warp in the attention kernel instead): one CTA of kMergeWarps warps per (query
// row, head), grid (Sq * Hq, B); the warps share out the splits, lanes own float4 columns, the warps' running (max,
// sum, out) combine through smem.
inline constexpr int kMergeWarps = 4;

template <class T, int D, class Args>
__global__ void __launch_bounds__(32 * kMergeWarps) merge_splits_kernel(const Args a) {
  constexpr int kCols = D / 4, kPer = (kCols + 31) / 32;
  __shared__ float sm[kMergeWarps], sl[kMergeWarps];
  __shared__ float4 so[kMergeWarps][kCols];
  const auto& p = a.p;
  const auto& s = p.shape;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t b = blockIdx.y;
  const int64_t i = blockIdx.x / s.q_heads, h = blockIdx.x % s.q_heads;
  const int64_t q_len = s.q_len(b) < 0 ? 0 : (s.q_len(b) > s.q_capacity ? s.q_capacity : s.q_len(b));
  const int64_t row_limit = s.varlen() ? q_len : s.q_capacity;
  if (i >= row_limit) return;
  const int64_t grow = s.varlen() ? s.q_start(b) + i : b * s.q_capacity + i;
  const int64_t stride = a.ws_rows * s.q_heads, base = grow * s.q_heads + h;
  float m = lse_neg_inf(), l = 0.f;
  float4 acc[kPer];
#pragma unroll
  for (int c = 0; c < kPer; ++c) acc[c] = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
  for (int sp = warp; sp < a.num_splits; sp += kMergeWarps) {
    const float ls = __ldcg(a.ws_lse + base + sp * stride);
    const float mn = fmaxf(m, ls);
    if (mn == lse_neg_inf()) continue;
    const float al = __expf(m - mn), w = __expf(ls - mn);
    const float4* src = reinterpret_cast<const float4*>(a.ws_out + (base + sp * stride) * D);
#pragma unroll
    for (int c = 0; c < kPer; ++c) {
      if (lane + 32 * c < kCols) {
        const float4 x = __ldcg(src + lane + 32 * c);
        acc[c].x = acc[c].x * al + w * x.x, acc[c].y = acc[c].y * al + w * x.y;
        acc[c].z = acc[c].z * al + w * x.z, acc[c].w = acc[c].w * al + w * x.w;
      }
    }
    l = l * al + w;
    m = mn;
  }
  if (lane == 0) sm[warp] = m, sl[warp] = l;
#pragma unroll
  for (int c = 0; c < kPer; ++c)
    if (lane + 32 * c < kCols) so[warp][lane + 32 * c] = acc[c];
  __syncthreads();
  float M = lse_neg_inf(), L = 0.f;
  for (int w = 0; w < kMergeWarps; ++w) lse_add(M, L, sm[w], sl[w]);
  const float lse = lse_value(M, L);
  const float post = lse == lse_neg_inf() ? 0.f : sink_scale(p.sink_logits ? p.sink_logits + h : nullptr, lse) / L;
  auto* dst = p.out_row(b, i, h);
  for (int c = threadIdx.x; c < kCols; c += 32 * kMergeWarps) {
    float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int w = 0; w < kMergeWarps; ++w) {
      const float f = sm[w] == lse_neg_inf() ? 0.f : __expf(sm[w] - M);
      x.x += f * so[w][c].x, x.y += f * so[w][c].y, x.z += f * so[w][c].z, x.w += f * so[w][c].w;
    }
    *reinterpret_cast<uint2*>(dst + 4 * c) =
        make_uint2(MmaOps<T>::pack(x.x * post, x.y * post), MmaOps<T>::pack(x.z * post, x.w * post));
  }
  if (threadIdx.x == 0 && p.lse) *p.lse_ptr(b, i, h) = lse;
}

}  // namespace attnkit::cuda::detail
