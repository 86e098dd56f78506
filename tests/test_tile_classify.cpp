// Tile classification must agree with the element predicate: kernels skip
// Empty tiles and drop per-element checks on Full ones, so a wrong Full is a
// silently wrong attention output. For every mask:
//   sound:  Full => every pair of the tile allowed, Empty => none allowed;
//   exact (built-in masks): Partial => the tile really is mixed;
//   algebra (compositions): full & x = x, empty & x = empty, empty | x = x,
//           full | x = full, ~ swaps full and empty.
// The predicate is materialised once per problem as 2-D prefix sums, so a
// tile costs O(1) to check and every tile of small problems can be visited.
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <attnkit/moba/own_block_mask.hpp>

#include "support/test_util.hpp"

namespace {

using namespace attnkit;

enum class Claim { Sound, Exact };

// Count of allowed pairs in any rectangle of the [rows, cols] grid.
class AllowedCounts {
 public:
  template <class Mask>
  AllowedCounts(const Mask& m, const SeqCtx& s, int64_t rows, int64_t cols)
      : cols_(cols), sum_(static_cast<size_t>((rows + 1) * (cols + 1)), 0) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j)
        at(i + 1, j + 1) = at(i, j + 1) + at(i + 1, j) - at(i, j) + (m(s, i, j) ? 1 : 0);
  }
  int64_t count(int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    return get(i1, j1) - get(i0, j1) - get(i1, j0) + get(i0, j0);
  }

 private:
  int64_t& at(int64_t r, int64_t c) { return sum_[static_cast<size_t>(r * (cols_ + 1) + c)]; }
  int64_t get(int64_t r, int64_t c) const { return sum_[static_cast<size_t>(r * (cols_ + 1) + c)]; }
  int64_t cols_;
  std::vector<int64_t> sum_;
};

// Collects the first disagreement instead of asserting per tile (millions of
// Catch assertions would dominate the run time).
struct Report {
  int64_t tiles = 0;
  int64_t failures = 0;
  std::string first;
  void fail(const std::string& what) {
    if (failures++ == 0) first = what;
  }
};

std::string describe(const char* name, const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  std::ostringstream os;
  os << name << ": Lq=" << s.q_len << " Lk=" << s.kv_len << " q_offset=" << s.q_offset << " tile [" << i0 << ", " << i1
     << ") x [" << j0 << ", " << j1 << ")";
  return os.str();
}

// Composition rules, checked against the children's own answers.
template <class M>
void check_algebra(const M&, const SeqCtx&, int64_t, int64_t, int64_t, int64_t, TileKind, const char*, Report&) {}

template <class A, class B>
void check_algebra(const AndMask<A, B>& m, const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1, TileKind t,
                   const char* name, Report& r) {
  const TileKind ta = m.a.classify(s, i0, i1, j0, j1), tb = m.b.classify(s, i0, i1, j0, j1);
  const TileKind want = (ta == TileKind::Empty || tb == TileKind::Empty) ? TileKind::Empty
                        : ta == TileKind::Full                           ? tb
                        : tb == TileKind::Full                           ? ta
                                                                         : TileKind::Partial;
  if (t != want)
    r.fail(describe(name, s, i0, i1, j0, j1) + ": & rule gives " + to_string(want) + ", got " + to_string(t));
}
template <class A, class B>
void check_algebra(const OrMask<A, B>& m, const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1, TileKind t,
                   const char* name, Report& r) {
  const TileKind ta = m.a.classify(s, i0, i1, j0, j1), tb = m.b.classify(s, i0, i1, j0, j1);
  const TileKind want = (ta == TileKind::Full || tb == TileKind::Full) ? TileKind::Full
                        : ta == TileKind::Empty                        ? tb
                        : tb == TileKind::Empty                        ? ta
                                                                       : TileKind::Partial;
  if (t != want)
    r.fail(describe(name, s, i0, i1, j0, j1) + ": | rule gives " + to_string(want) + ", got " + to_string(t));
}
template <class A>
void check_algebra(const NotMask<A>& m, const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1, TileKind t,
                   const char* name, Report& r) {
  const TileKind ta = m.a.classify(s, i0, i1, j0, j1);
  const TileKind want = ta == TileKind::Full ? TileKind::Empty : ta == TileKind::Empty ? TileKind::Full : ta;
  if (t != want)
    r.fail(describe(name, s, i0, i1, j0, j1) + ": ~ rule gives " + to_string(want) + ", got " + to_string(t));
}

template <class Mask>
void check_tile(const Mask& m, const SeqCtx& s, const AllowedCounts& counts, int64_t i0, int64_t i1, int64_t j0,
                int64_t j1, Claim claim, const char* name, Report& r) {
  ++r.tiles;
  const TileKind t = m.classify(s, i0, i1, j0, j1);
  const int64_t allowed = counts.count(i0, i1, j0, j1), area = (i1 - i0) * (j1 - j0);
  const TileKind truth = allowed == 0 ? TileKind::Empty : allowed == area ? TileKind::Full : TileKind::Partial;
  const bool sound = t == TileKind::Partial || t == truth;
  if (!sound || (claim == Claim::Exact && t != truth))
    r.fail(describe(name, s, i0, i1, j0, j1) + ": classified " + to_string(t) + ", truly " + to_string(truth) + " (" +
           std::to_string(allowed) + " of " + std::to_string(area) + " allowed)");
  check_algebra(m, s, i0, i1, j0, j1, t, name, r);
}

int64_t uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {  // inclusive
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

// Masks whose rows are always one run of keys: key_span must never decline.
bool span_always(const std::string& name) {
  for (const char* n : {"full", "causal", "padding", "sliding_window", "local", "prefix_lm", "document sorted",
                        "moba own block", "document & causal"})
    if (name.rfind(n, 0) == 0 && name.find('|') == std::string::npos && name.find('~') == std::string::npos)
      return true;
  return false;
}

// key_span (where a mask has it): a row it accepts must allow exactly the
// keys [lo, hi) among the valid ones, element by element.
template <class Mask>
void check_spans(const Mask& m, const SeqCtx& s, int64_t rows, int64_t cols, const char* name, Report& r) {
  if constexpr (has_key_span<Mask>::value) {
    for (int64_t i = 0; i < rows; ++i) {
      ++r.tiles;
      int64_t lo = 0, hi = 0;
      if (!m.key_span(s, i, lo, hi)) {
        if (span_always(name))
          r.fail(describe(name, s, i, i + 1, 0, cols) + ": key_span declined a row that is one run");
        continue;
      }
      for (int64_t j = 0; j < std::min(cols, s.kv_len); ++j)
        if (m(s, i, j) != (lo <= j && j < hi)) {
          r.fail(describe(name, s, i, i + 1, j, j + 1) + ": key_span [" + std::to_string(lo) + ", " +
                 std::to_string(hi) + ") disagrees with the predicate");
          break;
        }
    }
  } else {
    (void)m, (void)s, (void)rows, (void)cols, (void)r;
    if (span_always(name)) r.fail(std::string(name) + ": expected a key_span member");
  }
}

// Every tile of a small grid; tile grids of random tile sizes (the kernels'
// case, last tiles clipped) and random tiles of any shape on larger ones.
template <class Mask>
void check_mask(const Mask& m, const SeqCtx& s, int64_t rows, int64_t cols, Claim claim, const char* name,
                std::mt19937_64& rng, Report& r) {
  if (rows == 0 || cols == 0) return;
  check_spans(m, s, rows, cols, name, r);
  const AllowedCounts counts(m, s, rows, cols);
  if (rows <= 12 && cols <= 12) {
    for (int64_t i0 = 0; i0 < rows; ++i0)
      for (int64_t i1 = i0 + 1; i1 <= rows; ++i1)
        for (int64_t j0 = 0; j0 < cols; ++j0)
          for (int64_t j1 = j0 + 1; j1 <= cols; ++j1) check_tile(m, s, counts, i0, i1, j0, j1, claim, name, r);
    return;
  }
  for (int grid = 0; grid < 3; ++grid) {
    const int64_t bq = uniform(rng, 1, std::min<int64_t>(rows, 80)), bk = uniform(rng, 1, std::min<int64_t>(cols, 80));
    for (int64_t i0 = 0; i0 < rows; i0 += bq)
      for (int64_t j0 = 0; j0 < cols; j0 += bk)
        check_tile(m, s, counts, i0, std::min(i0 + bq, rows), j0, std::min(j0 + bk, cols), claim, name, r);
  }
  for (int n = 0; n < 1500; ++n) {
    int64_t i0 = uniform(rng, 0, rows - 1), i1 = uniform(rng, 0, rows - 1);
    int64_t j0 = uniform(rng, 0, cols - 1), j1 = uniform(rng, 0, cols - 1);
    if (i0 > i1) std::swap(i0, i1);
    if (j0 > j1) std::swap(j0, j1);
    check_tile(m, s, counts, i0, i1 + 1, j0, j1 + 1, claim, name, r);
  }
}

// Sorted document ids for `n` tokens: runs of random length, ids increasing
// by 1 or more (gaps happen when a document has no token in this range).
std::vector<int32_t> sorted_ids(std::mt19937_64& rng, int64_t n, int64_t copies) {
  std::vector<int32_t> ids(static_cast<size_t>(n * copies));
  const int64_t mean_run = uniform(rng, 1, std::max<int64_t>(1, n / 2));
  for (int64_t c = 0; c < copies; ++c) {
    int32_t id = static_cast<int32_t>(uniform(rng, 0, 3));
    for (int64_t t = 0; t < n; ++t) {
      if (t > 0 && uniform(rng, 1, mean_run) == 1) id += static_cast<int32_t>(uniform(rng, 1, 2));
      ids[static_cast<size_t>(c * n + t)] = id;
    }
  }
  return ids;
}

// Everything one problem needs: a context and the storage behind the
// data-backed masks (ids, block maps, dense matrices).
struct Problem {
  int64_t lq, lk, cap_q, cap_k;
  SeqCtx ctx;
  static constexpr int64_t kBatch = 1, kHead = 2, kBatches = 2, kHeads = 3;
  std::vector<int32_t> kv_ids, q_ids, shuffled_ids;
  std::vector<uint8_t> block_map, dense;
  std::vector<float> additive;
  BlockSparseMask block;
  int64_t window, left, right, prefix, sinks, sink_window;

  Problem(std::mt19937_64& rng, int64_t q, int64_t k, Alignment a) : lq(q), lk(k) {
    cap_q = lq + uniform(rng, 0, 3);
    cap_k = lk + uniform(rng, 0, 3);
    ctx = SeqCtx::make(kBatch, kHead, lq, lk, a);
    auto maybe_unbounded = [&](int64_t hi) { return uniform(rng, 0, 4) == 0 ? -1 : uniform(rng, 0, hi); };
    window = uniform(rng, 1, lk + 2);
    left = maybe_unbounded(lk + 1);
    right = maybe_unbounded(lk + 1);
    prefix = uniform(rng, 0, lk + 2);
    sinks = uniform(rng, 0, std::min<int64_t>(lk, 6));
    sink_window = uniform(rng, 1, lk + 1);

    kv_ids = sorted_ids(rng, lk, kBatches);
    q_ids = sorted_ids(rng, lq, kBatches);
    shuffled_ids = kv_ids;
    std::shuffle(shuffled_ids.begin(), shuffled_ids.end(), rng);

    const int64_t bq = uniform(rng, 1, std::max<int64_t>(1, cap_q / 2)),
                  bk = uniform(rng, 1, std::max<int64_t>(1, cap_k / 2));
    const int64_t rows = (cap_q + bq - 1) / bq, cols = (cap_k + bk - 1) / bk;
    block_map.resize(static_cast<size_t>(kBatches * kHeads * rows * cols));
    std::bernoulli_distribution on(std::uniform_real_distribution<double>(0.2, 0.95)(rng));
    for (auto& x : block_map) x = on(rng) ? 1 : 0;
    block = BlockSparseMask(block_map.data(), bq, bk, rows, cols);
    block.head_stride = rows * cols;
    block.batch_stride = kHeads * rows * cols;

    // A dense copy of causal & window for DenseMask / AdditiveMask; they read
    // their own batch slice (ctx.batch = 1).
    const auto one = dense_mask_bool(CausalMask{} & SlidingWindowMask(window), lq, lk, a);
    dense.assign(one.size(), 0);
    dense.insert(dense.end(), one.begin(), one.end());
    additive = to_additive(dense);
  }

  DocumentMask document(const std::vector<int32_t>& ids, bool sorted, bool with_q_ids) const {
    DocumentMask d(ids.data(), lk, sorted);
    if (with_q_ids) {
      d.q_ids = q_ids.data();
      d.q_batch_stride = lq;
    }
    return d;
  }
};

// Calls visit(name, mask, claim, rows, cols) for every mask kind and a set of
// compositions over problem `p`.
template <class Visit>
void for_each_mask(const Problem& p, Visit&& visit) {
  const int64_t lq = p.lq, lk = p.lk;
  const bool self = lq <= lk;  // document masks without q_ids read kv ids at p(i)
  visit("full", FullMask{}, Claim::Exact, lq, lk);
  visit("causal", CausalMask{}, Claim::Exact, lq, lk);
  // Padding is the one mask defined beyond the valid lengths: check it over
  // the padded capacity.
  visit("padding", PaddingMask{}, Claim::Exact, p.cap_q, p.cap_k);
  visit("sliding_window", SlidingWindowMask(p.window), Claim::Exact, lq, lk);
  visit("local", LocalMask(p.left, p.right), Claim::Exact, lq, lk);
  visit("local(-1, -1)", LocalMask(-1, -1), Claim::Exact, lq, lk);
  visit("local(-1, right)", LocalMask(-1, p.right < 0 ? 0 : p.right), Claim::Exact, lq, lk);
  visit("local(left, -1)", LocalMask(p.left < 0 ? 0 : p.left, -1), Claim::Exact, lq, lk);
  visit("prefix_lm", PrefixLMMask(p.prefix), Claim::Exact, lq, lk);
  visit("sink_window", SinkWindowMask(p.sinks, p.sink_window), Claim::Exact, lq, lk);
  visit("block_sparse", p.block, Claim::Exact, lq, lk);
  visit("moba own block", moba::OwnBlockMask(p.window), Claim::Exact, lq, lk);
  visit("moba own block (Bs 1)", moba::OwnBlockMask(1), Claim::Exact, lq, lk);
  if (self) visit("document sorted", p.document(p.kv_ids, true, false), Claim::Exact, lq, lk);
  // With separate query ids a gap in the ids can make an overlapping id range
  // share no document: sound, not exact.
  visit("document sorted, q_ids", p.document(p.kv_ids, true, true), Claim::Sound, lq, lk);
  if (self) visit("document unsorted", p.document(p.shuffled_ids, false, false), Claim::Sound, lq, lk);
  visit("custom(b, h, i, j)",
        custom_mask([](int64_t b, int64_t h, int64_t i, int64_t j) { return (3 * i + 5 * j + b + h) % 4 != 0; }),
        Claim::Sound, lq, lk);
  visit("custom with tile hint",
        custom_mask([](const SeqCtx& s, int64_t i, int64_t j) { return j <= s.pos(i); },
                    [](const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
                      return CausalMask{}.classify(s, i0, i1, j0, j1);
                    }),
        Claim::Exact, lq, lk);
  visit("dense", DenseMask(p.dense.data(), lk, lq * lk), Claim::Sound, lq, lk);
  visit("additive", AdditiveMask(p.additive.data(), lk, lq * lk), Claim::Sound, lq, lk);
  visit("untiled(causal)", untiled(CausalMask{}), Claim::Sound, lq, lk);

  // Compositions: sound plus the algebra rules.
  visit("causal & sliding_window", CausalMask{} & SlidingWindowMask(p.window), Claim::Sound, lq, lk);
  visit("causal | local", CausalMask{} | LocalMask(p.left, p.right), Claim::Sound, lq, lk);
  visit("sliding_window | local", SlidingWindowMask(p.window) | LocalMask(p.left, p.right), Claim::Sound, lq, lk);
  visit("~causal", ~CausalMask{}, Claim::Exact, lq, lk);
  visit("~sink_window", ~SinkWindowMask(p.sinks, p.sink_window), Claim::Exact, lq, lk);
  visit("block_sparse & causal", p.block & CausalMask{}, Claim::Sound, lq, lk);
  visit("prefix_lm | sliding_window", PrefixLMMask(p.prefix) | SlidingWindowMask(p.window), Claim::Sound, lq, lk);
  visit("document & causal", p.document(p.kv_ids, true, true) & CausalMask{}, Claim::Sound, lq, lk);
  visit("(causal & ~sliding_window) | (prefix_lm & local)",
        (CausalMask{} & ~SlidingWindowMask(p.window)) | (PrefixLMMask(p.prefix) & LocalMask(p.left, p.right)),
        Claim::Sound, lq, lk);
  visit("~((sink_window | block_sparse) & ~full) & custom",
        ~((SinkWindowMask(p.sinks, p.sink_window) | p.block) & ~FullMask{}) &
            custom_mask([](int64_t, int64_t, int64_t i, int64_t j) { return (i + j) % 3 != 1; }),
        Claim::Sound, lq, lk);
}

// Sizes: [lo, hi] for both lengths, Sq != Sk in general.
void run_problems(int64_t lo, int64_t hi, int problems) {
  const uint64_t seed = attnkit_test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  Report r;
  for (int n = 0; n < problems; ++n) {
    const int64_t lq = uniform(rng, lo, hi);
    const int64_t lk = n % 4 == 0 ? lq : uniform(rng, lo, hi);
    const Alignment a = n % 2 ? Alignment::TopLeft : Alignment::BottomRight;
    const Problem p(rng, lq, lk, a);
    for_each_mask(p, [&](const char* name, const auto& mask, Claim claim, int64_t rows, int64_t cols) {
      check_mask(mask, p.ctx, rows, cols, claim, name, rng, r);
    });
  }
  INFO(r.failures << " of " << r.tiles << " tiles disagree; first: " << r.first);
  CHECK(r.tiles > 0);
  CHECK(r.failures == 0);
}

}  // namespace

TEST_CASE("tile classify: every tile of small problems", "[mask][tile]") { run_problems(1, 12, 60); }

TEST_CASE("tile classify: tile grids and random tiles up to 64x64", "[mask][tile]") { run_problems(13, 64, 40); }

TEST_CASE("tile classify: random tiles on larger problems", "[mask][tile]") { run_problems(65, 400, 8); }

TEST_CASE("tile classify: the checker catches a wrong classifier", "[mask][tile]") {
  // A classifier that calls the whole causal triangle Full must be reported:
  // guards the harness itself against silently passing.
  auto wrong = custom_mask([](const SeqCtx& s, int64_t i, int64_t j) { return j <= s.pos(i); },
                           [](const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
                             const TileKind t = CausalMask{}.classify(s, i0, i1, j0, j1);
                             return t == TileKind::Partial ? TileKind::Full : t;
                           });
  std::mt19937_64 rng(attnkit_test::fresh_seed());
  Report r;
  const SeqCtx s = SeqCtx::make(0, 0, 9, 9, Alignment::BottomRight);
  check_mask(wrong, s, 9, 9, Claim::Sound, "wrong", rng, r);
  CHECK(r.failures > 0);
  Report exact;
  check_mask(untiled(CausalMask{}), s, 9, 9, Claim::Exact, "untiled", rng, exact);
  CHECK(exact.failures > 0);  // Partial on a full tile is not exact
}

namespace {
// Causal with a key span one key too long: the span check must notice.
struct OffByOneSpan : MaskBase<OffByOneSpan> {
  bool operator()(const SeqCtx& s, int64_t i, int64_t j) const { return j <= s.pos(i); }
  TileKind classify(const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    return CausalMask{}.classify(s, i0, i1, j0, j1);
  }
  bool key_span(const SeqCtx& s, int64_t i, int64_t& lo, int64_t& hi) const {
    lo = 0, hi = s.pos(i) + 2;
    return true;
  }
};
}  // namespace

TEST_CASE("tile classify: the checker catches a wrong key span", "[mask][tile]") {
  static_assert(has_key_span<OffByOneSpan>::value && has_key_span<CausalMask>::value, "detection");
  static_assert(!has_key_span<BlockSparseMask>::value && !has_key_span<NotMask<CausalMask>>::value, "detection");
  static_assert(has_key_span<AndMask<DocumentMask, CausalMask>>::value, "conjunction of spans");
  static_assert(!has_key_span<AndMask<BlockSparseMask, CausalMask>>::value, "no span without both");
  std::mt19937_64 rng(attnkit_test::fresh_seed());
  Report r;
  const SeqCtx s = SeqCtx::make(0, 0, 9, 12, Alignment::BottomRight);
  check_mask(OffByOneSpan{}, s, 9, 12, Claim::Exact, "off by one", rng, r);
  CHECK(r.failures > 0);
  Report declined;  // a mask that is one run per row may not decline
  check_spans(SinkWindowMask(2, 3), s, 9, 12, "causal (sinks posing as causal)", declined);
  CHECK(declined.failures > 0);
}
