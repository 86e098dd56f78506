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
  // Sorted ids: the query's document is one run of keys [first id >= d,
  // first id > d), found by two binary searches stepped together, so a GPU
  // thread has both loads of a step in flight at once (a kernel does this
  // once per row, not per tile, but on the critical path of its start).
  ATTNKIT_HDI bool key_span(const SeqCtx& s, int64_t i, int64_t& lo, int64_t& hi) const {
    if (!sorted) return false;
    const int32_t d = q_doc(s, i);
    int64_t a0 = 0, b0 = s.kv_len, a1 = 0, b1 = s.kv_len;
    while (a0 < b0 || a1 < b1) {
      const int64_t m0 = a0 + (b0 - a0) / 2, m1 = a1 + (b1 - a1) / 2;
      const int32_t id0 = a0 < b0 ? kv_doc(s, m0) : d, id1 = a1 < b1 ? kv_doc(s, m1) : d;
      if (a0 < b0) {
        if (id0 >= d)
          b0 = m0;
        else
          a0 = m0 + 1;
      }
      if (a1 < b1) {
        if (id1 > d)
          b1 = m1;
        else
          a1 = m1 + 1;
      }
    }
    lo = a0, hi = a1;
    return true;
  }
};

}  // namespace attnkit
