// Prefix-LM (GLM, T5 prefix decoder): the first P tokens are visible to every
// query (bidirectional prefix), the rest is causal.
#pragma once

#include "attnkit/mask/tile.hpp"

namespace attnkit {

struct PrefixLMMask : MaskBase<PrefixLMMask> {
  int64_t prefix = 0;
  PrefixLMMask() = default;
  ATTNKIT_HD explicit PrefixLMMask(int64_t p) : prefix(p) {}

  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const { return j < prefix || j <= s.pos(i); }
  ATTNKIT_HDI TileKind classify(const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    if (j1 - 1 < prefix || j1 - 1 <= s.pos(i0)) return TileKind::Full;
    if (j0 >= prefix && j0 > s.pos(i1 - 1)) return TileKind::Empty;
    return TileKind::Partial;
  }
  ATTNKIT_HDI bool key_span(const SeqCtx& s, int64_t i, int64_t& lo, int64_t& hi) const {
    lo = 0, hi = detail::imax(prefix, s.pos(i) + 1);
    return true;
  }
};

}  // namespace attnkit
