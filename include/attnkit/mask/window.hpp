// Band masks around the query position: sliding window (Mistral), local
// (bidirectional) and attention sinks + window (StreamingLLM, "Lambda").
#pragma once

#include "attnkit/mask/tile.hpp"

namespace attnkit {

// p - W < j <= p: W keys including the query's own position. This is Hugging
// Face / Mistral `sliding_window = W` and FlashAttention window_size=(W-1, 0).
struct SlidingWindowMask : MaskBase<SlidingWindowMask> {
  int64_t window = 1;
  SlidingWindowMask() = default;
  ATTNKIT_HD explicit SlidingWindowMask(int64_t w) : window(w) {}

  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const {
    const int64_t p = s.pos(i);
    return j <= p && j > p - window;
  }
  ATTNKIT_HDI TileKind classify(const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    const int64_t pmin = s.pos(i0), pmax = s.pos(i1 - 1);
    if (j0 > pmax || j1 - 1 <= pmin - window) return TileKind::Empty;
    if (j1 - 1 <= pmin && j0 > pmax - window) return TileKind::Full;
    return TileKind::Partial;
  }
  ATTNKIT_HDI bool key_span(const SeqCtx& s, int64_t i, int64_t& lo, int64_t& hi) const {
    lo = s.pos(i) - window + 1, hi = s.pos(i) + 1;
    return true;
  }
};

// p - left <= j <= p + right. A negative bound means unbounded on that side
// (FlashAttention's -1).
struct LocalMask : MaskBase<LocalMask> {
  int64_t left = -1;
  int64_t right = -1;
  LocalMask() = default;
  ATTNKIT_HD LocalMask(int64_t l, int64_t r) : left(l), right(r) {}

  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const {
    const int64_t p = s.pos(i);
    return (left < 0 || j >= p - left) && (right < 0 || j <= p + right);
  }
  ATTNKIT_HDI TileKind classify(const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    const int64_t pmin = s.pos(i0), pmax = s.pos(i1 - 1);
    if ((left >= 0 && j1 - 1 < pmin - left) || (right >= 0 && j0 > pmax + right)) return TileKind::Empty;
    if ((left < 0 || j0 >= pmax - left) && (right < 0 || j1 - 1 <= pmin + right)) return TileKind::Full;
    return TileKind::Partial;
  }
  ATTNKIT_HDI bool key_span(const SeqCtx& s, int64_t i, int64_t& lo, int64_t& hi) const {
    lo = left < 0 ? 0 : s.pos(i) - left;
    hi = right < 0 ? s.kv_len : s.pos(i) + right + 1;
    return true;
  }
};

// (j < S or p - W < j) and j <= p: the first S tokens ("attention sinks")
// stay visible, plus a causal window of W keys.
struct SinkWindowMask : MaskBase<SinkWindowMask> {
  int64_t sinks = 0;
  int64_t window = 1;
  SinkWindowMask() = default;
  ATTNKIT_HD SinkWindowMask(int64_t s, int64_t w) : sinks(s), window(w) {}

  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const {
    const int64_t p = s.pos(i);
    return j <= p && (j < sinks || j > p - window);
  }
  ATTNKIT_HDI TileKind classify(const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    const int64_t pmin = s.pos(i0), pmax = s.pos(i1 - 1);
    if (j0 > pmax) return TileKind::Empty;
    if (j0 >= sinks && j1 - 1 <= pmin - window) return TileKind::Empty;
    if (j1 - 1 <= pmin) {
      // Columns at or past the sinks must be inside every row's window.
      const int64_t first_non_sink = detail::imax(j0, sinks);
      if (first_non_sink > j1 - 1 || first_non_sink > pmax - window) return TileKind::Full;
    }
    return TileKind::Partial;
  }
  // One run only while the window reaches back to the sinks (or there are
  // none); otherwise two runs, and callers use the predicate.
  ATTNKIT_HDI bool key_span(const SeqCtx& s, int64_t i, int64_t& lo, int64_t& hi) const {
    const int64_t p = s.pos(i);
    hi = p + 1;
    lo = p - window + 1 <= sinks ? 0 : p - window + 1;
    return sinks <= 0 || lo == 0 || p < 0;
  }
};

}  // namespace attnkit
