// Fused RoPE for the flash kernel (forward_kernel.cuh): what the kernel needs
// to rotate Q rows once per CTA and each K tile as it lands in shared memory.
//
// K tiles and unpacked Q blocks (default positions) use rope_rows_linear: the
// accurate angle of a thread's first row, then a complex-multiply recurrence.
// Packed decode Q rows and explicit positions read cos/sin per element from a
// two-level fp32 table built per call by a tiny kernel:
// for an integer position t = first + 64 u_hi + u_lo, the angle splits into
// (a + b (first + 64 u_hi)) f_i + (b u_lo) f_i, so
//   cs(t) = hi[u_hi] * lo[u_lo]          (complex product, 4 FMA)
// with lo holding 64 rows (attention scaling folded in) and hi count/64 rows:
// 1 + 1/64 rows per position instead of one, so a 128K-token decode call
// builds ~2K rows, not 128K. Each table entry comes from the shared rope math
// (reduced_angle: double argument reduction, then sincosf), so the product is
// within ~2 fp32 ulp of a direct evaluation at any position.
//
// "Kinds" of angle position, all linear in t (a + b t): 0 = near (t itself);
// ReRoPE / Leaky ReRoPE add 1 = far query and 2 = far key (rope/rotate.hpp:
// ReRoPE w and 0, Leaky w + (t - w)/k and t/k). Positions outside the table
// (explicit positions arrays) are rotated with angles computed on the fly.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "attnkit/core/params.hpp"
#include "attnkit/cuda/check.cuh"
#include "attnkit/cuda/mma.cuh"
#include "attnkit/rope/config.hpp"
#include "attnkit/rope/frequencies.hpp"

namespace attnkit::cuda {

// The kernel's RoPE policy, a compile-time property of its configuration
// (FwdConfig): None compiles the plain kernel exactly as before.
enum class RopeKind : int { None = 0, Absolute = 1, Relative = 2 };

// Device-side description of one call's RoPE (kernel parameter, by value).
struct FusedRope {
  const rope::RopeParams* params = nullptr;  // device copy (on-the-fly fallback)
  const float2* lo = nullptr;                // [kinds][64][pairs]: (cos, sin) x attention scaling
  const float2* hi = nullptr;                // [kinds][n_hi][pairs]
  int64_t first = 0;                         // table positions [first, first + count)
  int64_t count = 0;
  int n_hi = 0;
  int pairs = 0;
  bool interleaved = false;
  double window = 0.0;  // ReRoPE / Leaky ReRoPE w (near branch: p - j <= w)
};

namespace detail {

inline constexpr int kRopeLoRows = 64;

// Slope and offset of kind k's angle position a + b t (see the header comment).
ATTNKIT_HDI void rope_kind_line(const rope::RopeParams& P, int kind, double* a, double* b) {
  *a = 0.0, *b = 1.0;
  if (kind == 0 || P.relative == RopeRelative::None) return;
  if (P.relative == RopeRelative::ReRoPE) {
    *a = kind == 1 ? P.window : 0.0, *b = 0.0;
  } else {
    *b = P.inv_leaky_k;
    *a = kind == 1 ? P.window - P.window * P.inv_leaky_k : 0.0;
  }
}

// cos/sin (x attention scaling) of pair i for kind `kind` at integer position t.
__device__ __forceinline__ float2 rope_cs(const FusedRope& r, int kind, int64_t t, int i) {
  const int64_t u = t - r.first;
  if (u >= 0 && u < r.count) {
    const float2 a = __ldg(r.lo + (kind * kRopeLoRows + (u & (kRopeLoRows - 1))) * r.pairs + i);
    const float2 b = __ldg(r.hi + (static_cast<int64_t>(kind) * r.n_hi + (u >> 6)) * r.pairs + i);
    return make_float2(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
  }
  const rope::RopeParams& P = *r.params;
  double a, b;
  rope_kind_line(P, kind, &a, &b);
  float s, c;
  rope::sincos_reduced(rope::reduced_angle(a + b * static_cast<double>(t), P.inv_freq[i]), &s, &c);
  return make_float2(c * P.attention_scaling, s * P.attention_scaling);
}

// Rotate one smem row (kStride-padded, storage type T) of head dim D.
// `src` is read; the rotation to `cs_kind` is written to `dst` (may equal
// src). With copy_rest, dims >= R are copied too (dst != src). One warp per
// row: lanes stride over the D/2 pair slots.
template <class T, int D>
__device__ __forceinline__ void rope_row(const FusedRope& r, const T* src, T* dst, int kind, int64_t t, int lane,
                                         bool copy_rest) {
  using Ops = MmaOps<T>;
  const int slots = copy_rest ? D / 2 : r.pairs;
  for (int i = lane; i < slots; i += 32) {
    if (i < r.pairs) {
      const int ia = r.interleaved ? 2 * i : i;
      const int ib = r.interleaved ? 2 * i + 1 : i + r.pairs;
      const float2 cs = rope_cs(r, kind, t, i);
      const float x0 = Ops::load(src + ia), x1 = Ops::load(src + ib);
      Ops::store(dst + ia, x0 * cs.x - x1 * cs.y);
      Ops::store(dst + ib, x0 * cs.y + x1 * cs.x);
    } else {
      const int d = 2 * r.pairs + 2 * (i - r.pairs);
      dst[d] = src[d];
      dst[d + 1] = src[d + 1];
    }
  }
}

// Rotate rows [0, kRows) of a smem tile whose row r sits at integer position
// pos0 + r (default positions: K tiles, unpacked Q blocks). Each thread owns
// fixed pair slots and a strided set of rows; cos/sin of its first row come
// from the shared accurate math, the next rows by a complex-multiply
// recurrence (rotation by the row stride's angle): no memory loads and no
// long-latency chain per element, ~1e-6 relative drift after 32 rows (bf16
// storage rounds at 4e-3). With copy_rest, dims >= R are copied (dst != src).
// The (row, slot) -> thread map is fixed, so a far pass into another buffer
// followed by an in-place near pass needs no barrier in between.
template <class T, int D, int kThreads, int kRows, int kStride>
__device__ __forceinline__ void rope_rows_linear(const FusedRope& r, const T* src, T* dst, int kind, int64_t pos0,
                                                 int tid, bool copy_rest) {
  using Ops = MmaOps<T>;
  constexpr int kTPR = D / 2 < kThreads ? D / 2 : kThreads;  // threads per row
  constexpr int kRG = kThreads / kTPR;                       // row groups
  const int rg = tid / kTPR, sl = tid % kTPR;
  if (rg >= kRG) return;
  const rope::RopeParams& P = *r.params;
  double a, b;
  rope_kind_line(P, kind, &a, &b);
  for (int s = sl; s < D / 2; s += kTPR) {
    if (s < r.pairs) {
      const double f = P.inv_freq[s];
      const float as = P.attention_scaling;
      float sn, cn, st, ct;
      rope::sincos_reduced(rope::reduced_angle(a + b * static_cast<double>(pos0 + rg), f), &sn, &cn);
      rope::sincos_reduced(rope::reduced_angle(b * kRG, f), &st, &ct);
      float c = cn * as, sv = sn * as;
      const int ia = r.interleaved ? 2 * s : s, ib = r.interleaved ? 2 * s + 1 : s + r.pairs;
#pragma unroll 4
      for (int row = rg; row < kRows; row += kRG) {
        const float x0 = Ops::load(src + row * kStride + ia), x1 = Ops::load(src + row * kStride + ib);
        Ops::store(dst + row * kStride + ia, x0 * c - x1 * sv);
        Ops::store(dst + row * kStride + ib, x0 * sv + x1 * c);
        const float c2 = c * ct - sv * st;
        sv = c * st + sv * ct;
        c = c2;
      }
    } else if (copy_rest) {
      for (int row = rg; row < kRows; row += kRG) {
        dst[row * kStride + 2 * s] = src[row * kStride + 2 * s];
        dst[row * kStride + 2 * s + 1] = src[row * kStride + 2 * s + 1];
      }
    }
  }
}

// The table: rows [kind][64] of lo, then [kind][n_hi] of hi; block (x) = row,
// threads over pairs. Block 0 also stores the params for the fallback.
// (A template, so every translation unit may define it.)
template <int kUnused = 0>
__global__ void rope_table_kernel(const rope::RopeParams P, int64_t first, int n_hi, int kinds, float2* lo, float2* hi,
                                  rope::RopeParams* params_out) {
  const int row = blockIdx.x;
  if (row == 0 && threadIdx.x == 0) *params_out = P;
  if (kinds == 0) return;
  const int lo_rows = kinds * kRopeLoRows;
  const int kind = row < lo_rows ? row / kRopeLoRows : (row - lo_rows) / n_hi;
  double a, b;
  rope_kind_line(P, kind, &a, &b);
  for (int i = threadIdx.x; i < P.pairs; i += blockDim.x) {
    float s, c;
    if (row < lo_rows) {
      const int u = row % kRopeLoRows;
      rope::sincos_reduced(rope::reduced_angle(b * u, P.inv_freq[i]), &s, &c);
      lo[row * P.pairs + i] = make_float2(c * P.attention_scaling, s * P.attention_scaling);
    } else {
      const int w = (row - lo_rows) % n_hi;
      const double t = static_cast<double>(first) + static_cast<double>(kRopeLoRows) * w;
      rope::sincos_reduced(rope::reduced_angle(a + b * t, P.inv_freq[i]), &s, &c);
      hi[static_cast<int64_t>(row - lo_rows) * P.pairs + i] = make_float2(c, s);
    }
  }
}

}  // namespace detail

// Builds the FusedRope of one call on `stream`: the table covers the default
// positions (keys 0..kv_capacity - 1; queries down to -q_capacity under
// bottom-right alignment, where Lq > Lk gives negative positions). The
// workspace (*ws) is allocated from `pool` and must be freed by the caller
// after the attention launch. With table = false only the params are stored
// and every angle is computed on the fly (for measurements).
inline FusedRope make_fused_rope(const rope::RopeParams& rp, const ProblemShape& s, cudaStream_t stream,
                                 cudaMemPool_t pool, void** ws, bool table = true) {
  FusedRope r;
  r.pairs = rp.pairs;
  r.interleaved = rp.style == RopeStyle::Interleaved;
  r.window = rp.window;
  const int kinds = rp.is_relative() ? 3 : 1;
  if (table) {
    r.first = s.alignment == Alignment::BottomRight ? -s.q_capacity : 0;
    const int64_t last = s.kv_capacity > s.q_capacity ? s.kv_capacity : s.q_capacity;  // exclusive
    r.count = last - r.first;
    r.n_hi = static_cast<int>((r.count + detail::kRopeLoRows - 1) / detail::kRopeLoRows);
  }
  const size_t params_bytes = (sizeof(rope::RopeParams) + 15) / 16 * 16;
  const size_t lo_n = table ? static_cast<size_t>(kinds) * detail::kRopeLoRows * rp.pairs : 0;
  const size_t hi_n = table ? static_cast<size_t>(kinds) * r.n_hi * rp.pairs : 0;
  detail::check(cudaMallocFromPoolAsync(ws, params_bytes + (lo_n + hi_n) * sizeof(float2), pool, stream),
                "cudaMallocFromPoolAsync (RoPE table)");
  auto* base = static_cast<unsigned char*>(*ws);
  auto* params = reinterpret_cast<rope::RopeParams*>(base);
  r.params = params;
  float2* lo = reinterpret_cast<float2*>(base + params_bytes);
  float2* hi = lo + lo_n;
  if (table) {
    r.lo = lo;
    r.hi = hi;
  }
  const unsigned rows = table ? static_cast<unsigned>(kinds * (detail::kRopeLoRows + r.n_hi)) : 1u;
  detail::rope_table_kernel<>
      <<<rows, 64, 0, stream>>>(rp, r.first, r.n_hi > 0 ? r.n_hi : 1, table ? kinds : 0, lo, hi, params);
  detail::check_launch("rope_table_kernel");
  return r;
}

}  // namespace attnkit::cuda
