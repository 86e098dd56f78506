// Document / block-diagonal mask for packed sequences: a query sees only keys
// of its own document. Usually composed with causal: `DocumentMask{..} & CausalMask{}`.
#pragma once

#include "attnkit/mask/tile.hpp"

namespace attnkit {

// kv_ids[b * batch_stride + j] is the document of key j. The document of query
// row i is q_ids[b * q_batch_stride + i] when q_ids is given, otherwise
// kv_ids at the query's position p(i) (self attention over a packed buffer,
// where queries are the last Lq tokens).
//
// Without q_ids the query positions must lie inside the keys (Lq <= Lk per
// sequence; the front door and the reference check it).
//
// When `sorted` (ids nondecreasing along the sequence, as in packing), tiles
// are classified from the ids at the tile's corners: exactly when query
// documents come from kv_ids, soundly (possibly Partial for an empty tile)
// with q_ids; otherwise every tile is Partial.
struct DocumentMask : MaskBase<DocumentMask> {
  const int32_t* kv_ids = nullptr;
  const int32_t* q_ids = nullptr;
  int64_t batch_stride = 0;
  int64_t q_batch_stride = 0;
  bool sorted = true;

  DocumentMask() = default;
  ATTNKIT_HD explicit DocumentMask(const int32_t* ids, int64_t bstride = 0, bool is_sorted = true)
      : kv_ids(ids), batch_stride(bstride), sorted(is_sorted) {}

  ATTNKIT_HDI int32_t q_doc(const SeqCtx& s, int64_t i) const {
    return q_ids ? q_ids[s.batch * q_batch_stride + i] : kv_ids[s.batch * batch_stride + s.pos(i)];
  }
  ATTNKIT_HDI int32_t kv_doc(const SeqCtx& s, int64_t j) const { return kv_ids[s.batch * batch_stride + j]; }

  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const { return q_doc(s, i) == kv_doc(s, j); }
  ATTNKIT_HDI TileKind classify(const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    if (!sorted) return TileKind::Partial;
    const int32_t qa = q_doc(s, i0), qb = q_doc(s, i1 - 1);
    const int32_t ka = kv_doc(s, j0), kb = kv_doc(s, j1 - 1);
    if (qb < ka || kb < qa) return TileKind::Empty;
    if (qa == qb && ka == kb && qa == ka) return TileKind::Full;
    return TileKind::Partial;
  }
  // Sorted ids: the query's document is one run of keys, found by two binary
  // searches (a kernel does this once per row, not per tile).
  ATTNKIT_HDI bool key_span(const SeqCtx& s, int64_t i, int64_t& lo, int64_t& hi) const {
    if (!sorted) return false;
    const int32_t d = q_doc(s, i);
    lo = first_key_after(s, d, false);
    hi = first_key_after(s, d, true);
    return true;
  }
  // First key j in [0, kv_len) with id > d (inclusive: id >= d when !strict), else kv_len.
  ATTNKIT_HDI int64_t first_key_after(const SeqCtx& s, int32_t d, bool strict) const {
    int64_t a = 0, b = s.kv_len;
    while (a < b) {
      const int64_t m = a + (b - a) / 2;
      const int32_t id = kv_doc(s, m);
      if (strict ? id > d : id >= d)
        b = m;
      else
        a = m + 1;
    }
    return a;
  }
};

}  // namespace attnkit
