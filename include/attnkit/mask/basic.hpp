// The masks that need no parameters: full, causal, padding.
#pragma once

#include "attnkit/mask/tile.hpp"

namespace attnkit {

// Every valid key (encoder self attention, cross attention).
struct FullMask : MaskBase<FullMask> {
  ATTNKIT_HDI bool operator()(const SeqCtx&, int64_t, int64_t) const { return true; }
  ATTNKIT_HDI TileKind classify(const SeqCtx&, int64_t, int64_t, int64_t, int64_t) const { return TileKind::Full; }
  ATTNKIT_HDI bool key_span(const SeqCtx& s, int64_t, int64_t& lo, int64_t& hi) const {
    lo = 0, hi = s.kv_len;
    return true;
  }
};

// j <= p(i). Alignment (bottom-right by default) is carried by SeqCtx.
struct CausalMask : MaskBase<CausalMask> {
  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const { return j <= s.pos(i); }
  ATTNKIT_HDI TileKind classify(const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    if (j0 > s.pos(i1 - 1)) return TileKind::Empty;
    if (j1 - 1 <= s.pos(i0)) return TileKind::Full;
    return TileKind::Partial;
  }
  ATTNKIT_HDI bool key_span(const SeqCtx& s, int64_t i, int64_t& lo, int64_t& hi) const {
    lo = 0, hi = s.pos(i) + 1;
    return true;
  }
};

// i < Lq_b and j < Lk_b. Kernels already iterate only over valid lengths, so
// inside a kernel this mask is always full; it exists so the padding rule can
// be named, composed and materialised (dense builders over padded shapes).
struct PaddingMask : MaskBase<PaddingMask> {
  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const { return i < s.q_len && j < s.kv_len; }
  ATTNKIT_HDI TileKind classify(const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    if (i0 >= s.q_len || j0 >= s.kv_len) return TileKind::Empty;
    if (i1 <= s.q_len && j1 <= s.kv_len) return TileKind::Full;
    return TileKind::Partial;
  }
  ATTNKIT_HDI bool key_span(const SeqCtx& s, int64_t i, int64_t& lo, int64_t& hi) const {
    lo = 0, hi = i < s.q_len ? s.kv_len : 0;
    return true;
  }
};

}  // namespace attnkit
