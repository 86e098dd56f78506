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

// The key runs (clipped_key_span below) of a set of rows, summarised: their
// union hull and their intersection. Enough to classify any key range
// exactly as Empty / Full where the rows' runs leave no gap, and soundly
// (Partial) where they do: a tile in a gap is then computed with every score
// masked. Lets a CTA classify its tiles with a few compares instead of the
// mask's classify, which for a document mask reads ids from global memory
// on the critical path of every tile.
struct SpanSummary {
  int u_lo, u_hi;  // hull of the non-empty runs (empty: u_lo >= u_hi)
  int x_lo, x_hi;  // intersection of the runs of valid rows
  int ok;          // 1: no row declined key_span

  __device__ static SpanSummary none(int kv_len) { return SpanSummary{kv_len, 0, 0, kv_len, 1}; }
  // One row's clipped run; `valid`: the row is below q_len (rows past it are
  // never written, so they constrain neither Full nor Empty).
  __device__ void add(int lo, int hi, bool valid, bool row_ok) {
    ok &= row_ok ? 1 : 0;
    if (!valid) return;
    if (lo < hi) u_lo = lo < u_lo ? lo : u_lo, u_hi = hi > u_hi ? hi : u_hi;
    x_lo = lo > x_lo ? lo : x_lo, x_hi = hi < x_hi ? hi : x_hi;
  }
  __device__ void merge(const SpanSummary& o) {
    u_lo = o.u_lo < u_lo ? o.u_lo : u_lo, u_hi = o.u_hi > u_hi ? o.u_hi : u_hi;
    x_lo = o.x_lo > x_lo ? o.x_lo : x_lo, x_hi = o.x_hi < x_hi ? o.x_hi : x_hi;
    ok &= o.ok;
  }
  __device__ void warp_reduce() {
#pragma unroll
    for (int d = 1; d < 32; d *= 2) {
      SpanSummary o;
      o.u_lo = __shfl_xor_sync(0xffffffffu, u_lo, d), o.u_hi = __shfl_xor_sync(0xffffffffu, u_hi, d);
      o.x_lo = __shfl_xor_sync(0xffffffffu, x_lo, d), o.x_hi = __shfl_xor_sync(0xffffffffu, x_hi, d);
      o.ok = __shfl_xor_sync(0xffffffffu, ok, d);
      merge(o);
    }
  }
  // Keys [j0, j1) (already clipped to kv_len).
  __device__ TileKind classify(int64_t j0, int64_t j1) const {
    if (j1 <= u_lo || j0 >= u_hi) return TileKind::Empty;
    if (j0 >= x_lo && j1 <= x_hi) return TileKind::Full;
    return TileKind::Partial;
  }
};

// The CTA-wide summary of every thread's `mine` (all threads call it; one
// barrier). `red`: 5 ints of shared memory per warp, written once.
__device__ __forceinline__ SpanSummary cta_span_summary(SpanSummary mine, int* red, int warps) {
  mine.warp_reduce();
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) {
    red[5 * warp + 0] = mine.u_lo, red[5 * warp + 1] = mine.u_hi;
    red[5 * warp + 2] = mine.x_lo, red[5 * warp + 3] = mine.x_hi, red[5 * warp + 4] = mine.ok;
  }
  __syncthreads();
  SpanSummary all{red[0], red[1], red[2], red[3], red[4]};
  for (int w = 1; w < warps; ++w)
    all.merge(SpanSummary{red[5 * w], red[5 * w + 1], red[5 * w + 2], red[5 * w + 3], red[5 * w + 4]});
  return all;
}

// Key tiles [lo, hi) of split `split` of `num_splits` (tiles_per_split each,
// the last one clipped to n_tiles; all n_tiles when unsplit). Empty (lo >= hi)
// when the split starts past the last tile.
__device__ __forceinline__ void split_tile_span(int split, int num_splits, int tiles_per_split, int n_tiles, int& lo,
                                                int& hi) {
  lo = 0, hi = n_tiles;
  if (num_splits > 1) {
    lo = split * tiles_per_split;
    hi = lo + tiles_per_split < n_tiles ? lo + tiles_per_split : n_tiles;
  }
}

// The tile classifier a CTA uses: rows [i0, i1) of every head it packs,
// keys [j0, j1) clipped to the valid length. Sound for packed groups: the
// union over heads is Empty/Full only if every head's tile is. With
// `use_spans` (every row of the CTA has a key run) tiles are classified
// from `spans`, the CTA's summary, without calling the mask.
template <class Mask>
struct TileClassifier {
  const Mask& mask;
  SeqCtx ctx;  // head = first packed head
  int group;
  int64_t i0, i1, kv_len, block_n;
  bool use_spans = false;
  SpanSummary spans = SpanSummary{0, 0, 0, 0, 0};

  __device__ TileKind range(int64_t n0, int64_t n1) const {  // key tiles [n0, n1)
    const int64_t j0 = n0 * block_n;
    const int64_t j1 = n1 * block_n < kv_len ? n1 * block_n : kv_len;
    if (use_spans) return spans.classify(j0, j1);
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
    if (use_spans) {
      // Tiles are Empty exactly outside the hull [u_lo, u_hi): the first
      // tile that reaches it, if it starts before u_hi. (A document CTA's
      // tiles before its document used to cost a classification each: ~3%
      // of the document4 kernel's stall samples, Session 7.)
      const int64_t at = spans.u_lo / block_n;
      const int n = at > lo ? static_cast<int>(at) : lo;
      if (n >= hi) return hi;
      kind = range(n, n + 1);
      return kind != TileKind::Empty ? n : hi;
    }
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
    if (use_spans) {  // the last tile that starts before u_hi, if it ends after u_lo
      const int64_t at = spans.u_hi > 0 ? (spans.u_hi - 1) / block_n : -1;
      const int64_t n = at < hi - 1 ? at : hi - 1;
      return n >= lo && range(n, n + 1) != TileKind::Empty ? n : lo - 1;
    }
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
  // The key tiles [first, last] a CTA visits: split `split` of `num_splits`
  // (tiles_per_split each; all n_tiles when unsplit), trimmed to the mask's
  // non-empty span; kind: the first tile's. Empty (first > last) when the CTA
  // has no rows or its split starts past the sequence's last tile (varlen /
  // padded lengths shorter than the capacity the split plan used): such a
  // split must visit nothing, not tiles past kv_len.
  __device__ void split_tiles(int split, int num_splits, int tiles_per_split, int n_tiles, int& first, int& last,
                              TileKind& kind) const {
    int lo, hi;
    split_tile_span(split, num_splits, tiles_per_split, n_tiles, lo, hi);
    first = hi, last = hi - 1;
    if (i0 < i1 && lo < hi) {
      first = first_nonempty(lo, hi, kind);
      if (first < hi) last = static_cast<int>(last_nonempty(first, hi));
    }
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
