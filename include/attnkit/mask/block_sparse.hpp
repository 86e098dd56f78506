// Block-sparse mask: a boolean map over (query block, key block) cells, as in
// BigBird / Longformer-style patterns and MoBA's block selection.
#pragma once

#include "attnkit/mask/tile.hpp"

namespace attnkit {

// allowed(i, j) = map[(i / block_q) * num_cols + j / block_k] (nonzero = allowed),
// offset by batch * batch_stride + head * head_stride. Rows are query rows
// (not positions). Compose with CausalMask for a causal diagonal.
struct BlockSparseMask : MaskBase<BlockSparseMask> {
  const uint8_t* map = nullptr;
  int64_t block_q = 1;
  int64_t block_k = 1;
  int64_t num_rows = 0;  // query blocks
  int64_t num_cols = 0;  // key blocks
  int64_t batch_stride = 0;
  int64_t head_stride = 0;

  BlockSparseMask() = default;
  ATTNKIT_HD BlockSparseMask(const uint8_t* m, int64_t bq, int64_t bk, int64_t rows, int64_t cols)
      : map(m), block_q(bq), block_k(bk), num_rows(rows), num_cols(cols) {}

  ATTNKIT_HDI const uint8_t* base(const SeqCtx& s) const { return map + s.batch * batch_stride + s.head * head_stride; }

  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const {
    return base(s)[(i / block_q) * num_cols + j / block_k] != 0;
  }
  // Visits the map cells the tile touches (a handful when tile sizes and
  // block sizes are alike), never the elements.
  ATTNKIT_HDI TileKind classify(const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    const uint8_t* m = base(s);
    bool any = false, all = true;
    for (int64_t r = i0 / block_q; r <= (i1 - 1) / block_q; ++r)
      for (int64_t c = j0 / block_k; c <= (j1 - 1) / block_k; ++c) {
        const bool on = m[r * num_cols + c] != 0;
        any = any || on;
        all = all && on;
      }
    return all ? TileKind::Full : any ? TileKind::Partial : TileKind::Empty;
  }
};

}  // namespace attnkit
