// Hand-worked mask matrices. Each expected grid is written out by hand (or
// built the way the source library builds it: triu / additive -inf), never
// derived from attnkit's own predicates, so an off-by-one in a mask shows up
// as a visible difference of two 0/1 grids.
#include <limits>
#include <string>
#include <vector>

#include "support/test_util.hpp"

namespace {

using namespace attnkit;
using Grid = std::vector<std::vector<int>>;

// The mask evaluated over one sequence with Lq queries and Lk keys.
template <class Mask>
Grid grid_of(const Mask& m, int64_t lq, int64_t lk, Alignment a = Alignment::BottomRight) {
  const SeqCtx s = SeqCtx::make(0, 0, lq, lk, a);
  Grid g(static_cast<size_t>(lq), std::vector<int>(static_cast<size_t>(lk)));
  for (int64_t i = 0; i < lq; ++i)
    for (int64_t j = 0; j < lk; ++j) g[i][j] = m(s, i, j) ? 1 : 0;
  return g;
}

// Batch entry b of a dense [B, 1, Sq, Sk] builder output.
Grid batch_slice(const std::vector<uint8_t>& dense, int64_t b, int64_t sq, int64_t sk) {
  Grid g(static_cast<size_t>(sq), std::vector<int>(static_cast<size_t>(sk)));
  for (int64_t i = 0; i < sq; ++i)
    for (int64_t j = 0; j < sk; ++j) g[i][j] = dense[static_cast<size_t>((b * sq + i) * sk + j)];
  return g;
}

std::string show(const Grid& g) {
  std::string s = "\n";
  for (const auto& row : g) {
    for (int x : row) s += x ? '1' : '.';
    s += '\n';
  }
  return s;
}

// torch.triu(ones(rows, cols), diagonal=d): 1 where j - i >= d.
Grid triu_ones(int64_t rows, int64_t cols, int64_t d) {
  Grid g(static_cast<size_t>(rows), std::vector<int>(static_cast<size_t>(cols)));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) g[i][j] = (j - i >= d) ? 1 : 0;
  return g;
}

#define CHECK_GRID(actual, expected) \
  do {                               \
    const Grid a_ = (actual);        \
    const Grid e_ = (expected);      \
    INFO("actual:" << show(a_));     \
    INFO("expected:" << show(e_));   \
    CHECK(a_ == e_);                 \
  } while (0)

}  // namespace

TEST_CASE("exact: Mistral sliding window W=3 with 2 cached tokens and 3 new queries", "[mask][exact]") {
  const int64_t past = 2, tgt = 3, W = 3, sk = past + tgt;

  // The Hugging Face / Megatron construction, built independently: the causal
  // mask of the new queries (masked where j > i + past, i.e. triu(diagonal =
  // past + 1)), then the band context_mask = 1 - triu(ones, diagonal = past -
  // W + 1) marks the keys that fell out of the window.
  const Grid future = triu_ones(tgt, sk, past + 1);
  const Grid in_band = triu_ones(tgt, sk, past - W + 1);
  Grid hf(tgt, std::vector<int>(sk));
  for (int64_t i = 0; i < tgt; ++i)
    for (int64_t j = 0; j < sk; ++j) hf[i][j] = (!future[i][j] && in_band[i][j]) ? 1 : 0;

  // By hand: query i sits at position i + 2 and sees positions p-2 .. p.
  const Grid by_hand = {{1, 1, 1, 0, 0},  //
                        {0, 1, 1, 1, 0},
                        {0, 0, 1, 1, 1}};
  CHECK_GRID(hf, by_hand);
  CHECK_GRID(grid_of(SlidingWindowMask(W), tgt, sk), by_hand);
  CHECK_GRID(grid_of(SlidingWindowMask(W) & CausalMask{}, tgt, sk), by_hand);
  CHECK_GRID(grid_of(from_hf_sliding_window(W), tgt, sk), by_hand);
  CHECK_GRID(batch_slice(dense_mask_bool(SlidingWindowMask(W), tgt, sk), 0, tgt, sk), by_hand);

  // The same window over the whole 5-token sequence (prefill, no cache).
  const Grid prefill = {{1, 0, 0, 0, 0},  //
                        {1, 1, 0, 0, 0},
                        {1, 1, 1, 0, 0},
                        {0, 1, 1, 1, 0},
                        {0, 0, 1, 1, 1}};
  CHECK_GRID(grid_of(SlidingWindowMask(W), sk, sk), prefill);
  // Its last three rows are the decode case above: the alignment rule at work.
  CHECK_GRID(Grid(prefill.begin() + past, prefill.end()), by_hand);
}

TEST_CASE("exact: encoder-decoder masks, causal + PAD, lengths 3 and 5 padded to 5", "[mask][exact]") {
  const int64_t B = 2, S = 5;
  const int32_t lens[2] = {3, 5};

  // The textbook construction: additive float masks, causal -inf above the
  // diagonal plus -inf on PAD keys, summed. Padded query rows are ignored by
  // that construction; attnkit masks them entirely (their output is 0).
  const float ninf = -std::numeric_limits<float>::infinity();
  auto additive_reference = [&](int64_t b, bool causal) {
    Grid g(S, std::vector<int>(S));
    for (int64_t i = 0; i < S; ++i)
      for (int64_t j = 0; j < S; ++j) {
        float bias = 0.0f;
        if (causal && j > i) bias += ninf;
        if (j >= lens[b]) bias += ninf;
        g[i][j] = (i < lens[b] && bias == 0.0f) ? 1 : 0;
      }
    return g;
  };

  SECTION("encoder self attention: padding only") {
    const Grid b0 = {{1, 1, 1, 0, 0},  //
                     {1, 1, 1, 0, 0},
                     {1, 1, 1, 0, 0},
                     {0, 0, 0, 0, 0},
                     {0, 0, 0, 0, 0}};
    const Grid b1(S, std::vector<int>(S, 1));
    const auto dense = dense_mask_bool(PaddingMask{}, B, S, S, lens, lens);
    CHECK_GRID(batch_slice(dense, 0, S, S), b0);
    CHECK_GRID(batch_slice(dense, 1, S, S), b1);
    CHECK_GRID(batch_slice(dense, 0, S, S), additive_reference(0, false));
    CHECK_GRID(batch_slice(dense, 1, S, S), additive_reference(1, false));
    // The padding predicate itself over the padded 5x5 grid.
    const SeqCtx s0 = SeqCtx::make(0, 0, 3, 3, Alignment::BottomRight);
    Grid pred(S, std::vector<int>(S));
    for (int64_t i = 0; i < S; ++i)
      for (int64_t j = 0; j < S; ++j) pred[i][j] = PaddingMask{}(s0, i, j) ? 1 : 0;
    CHECK_GRID(pred, b0);
    // FullMask with the lengths is the same thing: padding comes from the lengths.
    CHECK(dense_mask_bool(FullMask{}, B, S, S, lens, lens) == dense);
  }

  SECTION("decoder self attention: causal & padding") {
    const Grid b0 = {{1, 0, 0, 0, 0},  //
                     {1, 1, 0, 0, 0},
                     {1, 1, 1, 0, 0},
                     {0, 0, 0, 0, 0},
                     {0, 0, 0, 0, 0}};
    const Grid b1 = {{1, 0, 0, 0, 0},  //
                     {1, 1, 0, 0, 0},
                     {1, 1, 1, 0, 0},
                     {1, 1, 1, 1, 0},
                     {1, 1, 1, 1, 1}};
    const auto dense = dense_mask_bool(CausalMask{} & PaddingMask{}, B, S, S, lens, lens);
    CHECK_GRID(batch_slice(dense, 0, S, S), b0);
    CHECK_GRID(batch_slice(dense, 1, S, S), b1);
    CHECK_GRID(batch_slice(dense, 0, S, S), additive_reference(0, true));
    CHECK_GRID(batch_slice(dense, 1, S, S), additive_reference(1, true));
    // Per-sequence alignment comes from the actual lengths: batch 0 is a
    // 3x3 causal problem, not rows 0..2 of a 5x5 one shifted by the padding.
    CHECK(dense_mask_bool(CausalMask{}, B, S, S, lens, lens) == dense);
  }

  SECTION("cross attention: decoder queries over encoder keys") {
    // Decoder lengths 2 and 4 padded to 4; encoder lengths 3 and 5 padded to 5.
    const int32_t dec[2] = {2, 4};
    const int64_t Sq = 4;
    const Grid b0 = {{1, 1, 1, 0, 0},  //
                     {1, 1, 1, 0, 0},
                     {0, 0, 0, 0, 0},
                     {0, 0, 0, 0, 0}};
    const Grid b1 = {{1, 1, 1, 1, 1},  //
                     {1, 1, 1, 1, 1},
                     {1, 1, 1, 1, 1},
                     {1, 1, 1, 1, 1}};
    const auto dense = dense_mask_bool(FullMask{} & PaddingMask{}, B, Sq, S, dec, lens);
    CHECK_GRID(batch_slice(dense, 0, Sq, S), b0);
    CHECK_GRID(batch_slice(dense, 1, Sq, S), b1);
  }
}

TEST_CASE("exact: prefix_lm(P=2) in N=5", "[mask][exact]") {
  const Grid expected = {{1, 1, 0, 0, 0},  //
                         {1, 1, 0, 0, 0},
                         {1, 1, 1, 0, 0},
                         {1, 1, 1, 1, 0},
                         {1, 1, 1, 1, 1}};
  CHECK_GRID(grid_of(PrefixLMMask(2), 5, 5), expected);
  // P=0 is causal, P=N is full.
  CHECK_GRID(grid_of(PrefixLMMask(0), 5, 5), grid_of(CausalMask{}, 5, 5));
  CHECK_GRID(grid_of(PrefixLMMask(5), 5, 5), grid_of(FullMask{}, 5, 5));
}

TEST_CASE("exact: sink_window(S=1, W=2) in N=5", "[mask][exact]") {
  // The first token stays visible; otherwise the query and its predecessor.
  const Grid expected = {{1, 0, 0, 0, 0},  //
                         {1, 1, 0, 0, 0},
                         {1, 1, 1, 0, 0},
                         {1, 0, 1, 1, 0},
                         {1, 0, 0, 1, 1}};
  CHECK_GRID(grid_of(SinkWindowMask(1, 2), 5, 5), expected);
  // Without sinks it is the sliding window.
  CHECK_GRID(grid_of(SinkWindowMask(0, 2), 5, 5), grid_of(SlidingWindowMask(2), 5, 5));
}

TEST_CASE("exact: top-left vs bottom-right causal with Sq != Sk", "[mask][exact]") {
  SECTION("Sq=3 < Sk=5") {
    const Grid br = {{1, 1, 1, 0, 0},  //
                     {1, 1, 1, 1, 0},
                     {1, 1, 1, 1, 1}};
    const Grid tl = {{1, 0, 0, 0, 0},  //
                     {1, 1, 0, 0, 0},
                     {1, 1, 1, 0, 0}};
    CHECK_GRID(grid_of(CausalMask{}, 3, 5, Alignment::BottomRight), br);
    CHECK_GRID(grid_of(CausalMask{}, 3, 5, Alignment::TopLeft), tl);
    CHECK_GRID(batch_slice(dense_mask_bool(CausalMask{}, 3, 5, Alignment::TopLeft), 0, 3, 5), tl);
  }
  SECTION("Sq=5 > Sk=3: bottom-right leaves the first rows with no key") {
    const Grid br = {{0, 0, 0},  //
                     {0, 0, 0},
                     {1, 0, 0},
                     {1, 1, 0},
                     {1, 1, 1}};
    const Grid tl = {{1, 0, 0},  //
                     {1, 1, 0},
                     {1, 1, 1},
                     {1, 1, 1},
                     {1, 1, 1}};
    CHECK_GRID(grid_of(CausalMask{}, 5, 3, Alignment::BottomRight), br);
    CHECK_GRID(grid_of(CausalMask{}, 5, 3, Alignment::TopLeft), tl);
  }
}

TEST_CASE("exact: Hugging Face / FlashAttention window converters", "[mask][exact]") {
  for (int64_t W = 1; W <= 6; ++W) {
    INFO("W = " << W);
    const SlidingWindowMask hf = from_hf_sliding_window(W);
    CHECK(hf.window == W);
    const auto fa = to_flash_window(hf);
    CHECK(fa.first == W - 1);
    CHECK(fa.second == 0);
    const LocalMask local = from_flash_window(W - 1, 0);
    CHECK(to_hf_sliding_window(local) == W);
    for (int64_t lq : {1, 4, 7})
      for (auto a : {Alignment::BottomRight, Alignment::TopLeft})
        CHECK_GRID(grid_of(local, lq, 7, a), grid_of(hf, lq, 7, a));
    // The classic off-by-one, (W, 0), sees one key more: every row i >= W
    // also reaches key i - W.
    Grid off_by_one = grid_of(hf, 7, 7);
    for (int64_t i = W; i < 7; ++i) off_by_one[i][i - W] = 1;
    CHECK_GRID(grid_of(from_flash_window(W, 0), 7, 7), off_by_one);
  }
  // (-1, 0) is causal, (-1, -1) is full, (0, 0) is the diagonal only.
  CHECK_GRID(grid_of(from_flash_window(-1, 0), 4, 6), grid_of(CausalMask{}, 4, 6));
  CHECK_GRID(grid_of(from_flash_window(-1, -1), 4, 6), grid_of(FullMask{}, 4, 6));
  const Grid diag = {{0, 0, 1, 0, 0},  //
                     {0, 0, 0, 1, 0},
                     {0, 0, 0, 0, 1}};
  CHECK_GRID(grid_of(from_flash_window(0, 0), 3, 5), diag);
  // A bidirectional (1, 1) band, bottom-right aligned.
  const Grid band = {{0, 1, 1, 1, 0},  //
                     {0, 0, 1, 1, 1},
                     {0, 0, 0, 1, 1}};
  CHECK_GRID(grid_of(from_flash_window(1, 1), 3, 5), band);

  CHECK_THROWS_WITH(from_hf_sliding_window(0),
                    "attnkit: sliding_window (0) must be >= 1 (number of keys including the query itself)");
  CHECK_THROWS_WITH(from_flash_window(-2, 0), "attnkit: window_size.left (-2) must be >= -1 (-1 = unbounded)");
  CHECK_THROWS_WITH(from_flash_window(0, -3), "attnkit: window_size.right (-3) must be >= -1 (-1 = unbounded)");
  CHECK_THROWS_WITH(to_hf_sliding_window(LocalMask(2, 1)),
                    "attnkit: window_size ((2, 1)) must be (left >= 0, 0) to be a Mistral sliding window");
  CHECK_THROWS_AS(to_hf_sliding_window(LocalMask(-1, 0)), attnkit::Error);
}
