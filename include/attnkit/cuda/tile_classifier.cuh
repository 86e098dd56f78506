// Which key tiles a CTA visits, and which of them need the mask checked per
// element: the device side of the mask contract (mask/tile.hpp), shared by
// the mma.sync kernel (forward_kernel.cuh) and the sm_90a kernel
// (sm90/forward_sm90.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "attnkit/mask/tile.hpp"
#include "attnkit/mask/traits.hpp"

namespace attnkit::cuda::detail {

// The tile classifier a CTA uses: rows [i0, i1) of every head it packs,
// keys [j0, j1) clipped to the valid length. Sound for packed groups: the
// union over heads is Empty/Full only if every head's tile is.
template <class Mask>
struct TileClassifier {
  const Mask& mask;
  SeqCtx ctx;  // head = first packed head
  int group;
  int64_t i0, i1, kv_len, block_n;

  __device__ TileKind range(int64_t n0, int64_t n1) const {  // key tiles [n0, n1)
    const int64_t j0 = n0 * block_n;
    const int64_t j1 = n1 * block_n < kv_len ? n1 * block_n : kv_len;
    SeqCtx c = ctx;
    TileKind k = mask.classify(c, i0, i1, j0, j1);
    for (int h = 1; h < group && k != TileKind::Partial; ++h) {
      c.head = ctx.head + h;
      const TileKind kh = mask.classify(c, i0, i1, j0, j1);
      if (kh != k) k = TileKind::Partial;
    }
    return k;
  }
  // First tile in [lo, hi) that is not Empty (else hi), and its kind. Tile
  // lo is tried alone first: inside a mask's non-empty span (the common case)
  // that one classification is all a tile costs. Past it, spans of 32 tiles
  // are ruled out with one call, so a long window/document scan stays short.
  __device__ int first_nonempty(int lo, int hi, TileKind& kind) const {
    if (lo >= hi) return hi;
    kind = range(lo, lo + 1);
    if (kind != TileKind::Empty) return lo;
    int n = lo + 1;
    while (n < hi) {
      const int span = n + 32 < hi ? n + 32 : hi;
      if (span - n > 1 && range(n, span) == TileKind::Empty) {
        n = span;
        continue;
      }
      for (; n < span; ++n) {
        kind = range(n, n + 1);
        if (kind != TileKind::Empty) return n;
      }
    }
    return hi;
  }
  // Last tile in [lo, hi) that is not Empty, else lo - 1.
  __device__ int64_t last_nonempty(int64_t lo, int64_t hi) const {
    int64_t n = hi;
    while (n > lo) {
      const int64_t span = n - 32 > lo ? n - 32 : lo;
      if (n - span > 1 && range(span, n) == TileKind::Empty) {
        n = span;
        continue;
      }
      for (; n > span; --n)
        if (range(n - 1, n) != TileKind::Empty) return n - 1;
    }
    return lo - 1;
  }
};

// Row `row`'s run of allowed keys (the mask's key_span), clipped to
// [0, kv_len); a row past q_len gets an empty run. False: the mask declines
// this row and the caller uses the predicate. Shared by both CUDA kernels.
template <class Mask>
__device__ __forceinline__ bool clipped_key_span(const Mask& mask, const SeqCtx& ctx, int row, int q_len, int kv_len,
                                                 int& lo_out, int& hi_out) {
  int64_t lo = 0, hi = 0;
  bool ok = true;
  if (row < q_len) ok = mask.key_span(ctx, row, lo, hi);
  lo = lo < 0 ? 0 : (lo > kv_len ? kv_len : lo);
  hi = hi < lo ? lo : (hi > kv_len ? kv_len : hi);
  lo_out = static_cast<int>(lo), hi_out = static_cast<int>(hi);
  return ok;
}

}  // namespace attnkit::cuda::detail
