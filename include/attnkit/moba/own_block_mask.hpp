// MoBA's own-block part as a mask (DESIGN §5): a query at position p attends
// the keys of its own block c = p / Bs up to itself, j in [c * Bs, p].
// With exact tile classification, a kernel run under it costs about Bs / 2
// keys per query whatever the sequence length, and composes with the
// selected-block parts through the LSE merge.
#pragma once

#include <cstdint>

#include "attnkit/core/macros.hpp"
#include "attnkit/core/sequence.hpp"
#include "attnkit/mask/tile.hpp"

namespace attnkit::moba {

struct OwnBlockMask : MaskBase<OwnBlockMask> {
  int64_t block_size = 1;

  OwnBlockMask() = default;
  ATTNKIT_HD explicit OwnBlockMask(int64_t bs) : block_size(bs) {}

  ATTNKIT_HDI int64_t block_start(int64_t p) const { return (p / block_size) * block_size; }
  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const {
    const int64_t p = s.pos(i);
    return p >= 0 && j <= p && j >= block_start(p);
  }
  // Positions grow with the row, and so do both ends of a row's key range
  // [start(p), p]: the tile is empty when its keys end before the first row's
  // range starts or begin after the last row's range ends, and full when every
  // row's range covers it (the last row's start and the first row's end bound).
  ATTNKIT_HDI TileKind classify(const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    const int64_t p0 = s.pos(i0), p1 = s.pos(i1 - 1);
    if (p1 < 0 || j0 > p1) return TileKind::Empty;
    const int64_t first_start = p0 < 0 ? 0 : block_start(p0);
    if (j1 - 1 < first_start) return TileKind::Empty;
    if (p0 >= 0 && j1 - 1 <= p0 && j0 >= block_start(p1)) return TileKind::Full;
    return TileKind::Partial;
  }
  ATTNKIT_HDI bool key_span(const SeqCtx& s, int64_t i, int64_t& lo, int64_t& hi) const {
    const int64_t p = s.pos(i);
    lo = p < 0 ? 0 : block_start(p), hi = p < 0 ? 0 : p + 1;
    return true;
  }
};

}  // namespace attnkit::moba
