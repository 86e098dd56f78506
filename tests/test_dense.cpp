// Dense builders: the boolean and additive matrices must equal the mask
// predicate, with positions taken from each batch entry's actual lengths, and
// must survive the round trip back into a mask (DenseMask / AdditiveMask).
#include <cmath>
#include <random>
#include <vector>

#include "support/test_util.hpp"

namespace {

using namespace attnkit;

int64_t uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

std::vector<int32_t> random_lengths(std::mt19937_64& rng, int64_t B, int64_t cap) {
  std::vector<int32_t> l(static_cast<size_t>(B));
  for (auto& x : l) x = static_cast<int32_t>(uniform(rng, 0, cap));
  if (B > 0) l[0] = static_cast<int32_t>(cap);  // one full-length entry
  return l;
}

// dense[b, 0, i, j] == (i < Lq_b && j < Lk_b && allowed(b, i, j)); `allowed`
// gets the context built from that entry's lengths.
template <class Mask, class Allowed>
int64_t count_mismatches(const std::vector<uint8_t>& dense, const Mask&, Allowed&& allowed, int64_t B, int64_t Sq,
                         int64_t Sk, const int32_t* ql, const int32_t* kl, Alignment a, int64_t head) {
  int64_t bad = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t lq = ql ? ql[b] : Sq, lk = kl ? kl[b] : Sk;
    const SeqCtx s = SeqCtx::make(b, head, lq, lk, a);
    for (int64_t i = 0; i < Sq; ++i)
      for (int64_t j = 0; j < Sk; ++j) {
        const bool want = i < lq && j < lk && allowed(s, i, j);
        bad += (dense[static_cast<size_t>((b * Sq + i) * Sk + j)] != 0) != want;
      }
  }
  return bad;
}

// Runs `check(name, mask, batch_dependent_formula_or_null)` over a set of masks
// whose data depends on batch and head, so a builder that mixes up batch
// entries or heads shows it.
struct Zoo {
  int64_t B, Sq, Sk, H = 3;
  std::vector<int32_t> ids, q_ids;
  std::vector<uint8_t> map;
  BlockSparseMask block;
  Zoo(std::mt19937_64& rng, int64_t b, int64_t sq, int64_t sk) : B(b), Sq(sq), Sk(sk) {
    auto sorted_ids = [&](int64_t n) {
      std::vector<int32_t> v(static_cast<size_t>(B * n));
      for (int64_t bb = 0; bb < B; ++bb) {
        int32_t id = 0;
        for (int64_t t = 0; t < n; ++t) {
          if (uniform(rng, 0, 3) == 0) ++id;
          v[static_cast<size_t>(bb * n + t)] = id;
        }
      }
      return v;
    };
    ids = sorted_ids(Sk);
    // Query documents given explicitly: with Lq > Lk a bottom-right query has
    // a negative position, so kv_ids[p(i)] does not exist.
    q_ids = sorted_ids(Sq);
    const int64_t bq = uniform(rng, 1, 4), bk = uniform(rng, 1, 4);
    const int64_t rows = (Sq + bq - 1) / bq, cols = (Sk + bk - 1) / bk;
    map.resize(static_cast<size_t>(B * H * rows * cols));
    for (auto& x : map) x = static_cast<uint8_t>(uniform(rng, 0, 1));
    block = BlockSparseMask(map.data(), bq, bk, rows, cols);
    block.head_stride = rows * cols;
    block.batch_stride = H * rows * cols;
  }
  DocumentMask document() const {
    DocumentMask d(ids.data(), Sk);
    d.q_ids = q_ids.data();
    d.q_batch_stride = Sq;
    return d;
  }
};

}  // namespace

TEST_CASE("dense: [Sq, Sk] builders equal hand-written rules", "[mask][dense]") {
  const uint64_t seed = attnkit_test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (int n = 0; n < 20; ++n) {
    const int64_t Sq = uniform(rng, 1, 23), Sk = uniform(rng, 1, 23), W = uniform(rng, 1, 6);
    const Alignment a = n % 2 ? Alignment::TopLeft : Alignment::BottomRight;
    INFO("Sq " << Sq << " Sk " << Sk << " W " << W << (n % 2 ? " top-left" : " bottom-right"));
    const int64_t off = a == Alignment::BottomRight ? Sk - Sq : 0;
    const auto causal = dense_mask_bool(CausalMask{}, Sq, Sk, a);
    const auto window = dense_mask_bool(SlidingWindowMask(W), Sq, Sk, a);
    const auto full = dense_mask_bool(FullMask{}, Sq, Sk, a);
    REQUIRE(causal.size() == static_cast<size_t>(Sq * Sk));
    int64_t bad = 0;
    for (int64_t i = 0; i < Sq; ++i)
      for (int64_t j = 0; j < Sk; ++j) {
        const size_t e = static_cast<size_t>(i * Sk + j);
        bad += causal[e] != (j <= i + off ? 1 : 0);
        bad += window[e] != (j <= i + off && j > i + off - W ? 1 : 0);
        bad += full[e] != 1;
      }
    CHECK(bad == 0);
  }
}

TEST_CASE("dense: [B, 1, Sq, Sk] builders honour per-batch lengths, batch and head", "[mask][dense]") {
  const uint64_t seed = attnkit_test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (int n = 0; n < 12; ++n) {
    const int64_t B = uniform(rng, 1, 4), Sq = uniform(rng, 1, 17), Sk = uniform(rng, 1, 17);
    const Alignment a = n % 2 ? Alignment::TopLeft : Alignment::BottomRight;
    const auto ql = random_lengths(rng, B, Sq), kl = random_lengths(rng, B, Sk);
    const Zoo z(rng, B, Sq, Sk);
    const int64_t head = uniform(rng, 0, z.H - 1);
    INFO("B " << B << " Sq " << Sq << " Sk " << Sk << " head " << head);

    // The causal rule written out: p(i) = i + (Lk_b - Lq_b) per entry, not
    // from the padded Sq/Sk.
    const auto causal = dense_mask_bool(CausalMask{}, B, Sq, Sk, ql.data(), kl.data(), a);
    CHECK(count_mismatches(
              causal, CausalMask{},
              [&](const SeqCtx& s, int64_t i, int64_t j) {
                return j <= i + (a == Alignment::BottomRight ? s.kv_len - s.q_len : 0);
              },
              B, Sq, Sk, ql.data(), kl.data(), a, head) == 0);

    auto same_as_predicate = [&](const auto& mask) {
      const auto d = dense_mask_bool(mask, B, Sq, Sk, ql.data(), kl.data(), a, head);
      REQUIRE(d.size() == static_cast<size_t>(B * Sq * Sk));
      return count_mismatches(
          d, mask, [&](const SeqCtx& s, int64_t i, int64_t j) { return mask(s, i, j); }, B, Sq, Sk, ql.data(),
          kl.data(), a, head);
    };
    CHECK(same_as_predicate(FullMask{}) == 0);
    CHECK(same_as_predicate(PaddingMask{} & CausalMask{}) == 0);
    CHECK(same_as_predicate(SlidingWindowMask(uniform(rng, 1, 5))) == 0);
    CHECK(same_as_predicate(PrefixLMMask(uniform(rng, 0, 5)) | LocalMask(1, 2)) == 0);
    CHECK(same_as_predicate(SinkWindowMask(2, 3)) == 0);
    CHECK(same_as_predicate(z.block) == 0);
    CHECK(same_as_predicate(z.document() & CausalMask{}) == 0);
    CHECK(same_as_predicate(custom_mask(
              [](int64_t b, int64_t h, int64_t i, int64_t j) { return (b + 2 * h + i * j) % 3 != 0; })) == 0);

    // The head argument reaches head-dependent masks: block maps differ by head.
    const auto h0 = dense_mask_bool(z.block, B, Sq, Sk, nullptr, nullptr, a, 0);
    const auto h1 = dense_mask_bool(z.block, B, Sq, Sk, nullptr, nullptr, a, 1);
    int64_t expect_diff = 0, diff = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < Sq; ++i)
        for (int64_t j = 0; j < Sk; ++j) {
          const size_t e = static_cast<size_t>((b * Sq + i) * Sk + j);
          const int64_t cell = (i / z.block.block_q) * z.block.num_cols + j / z.block.block_k;
          const uint8_t m0 = z.map[static_cast<size_t>(b * z.block.batch_stride + cell)];
          const uint8_t m1 = z.map[static_cast<size_t>(b * z.block.batch_stride + z.block.head_stride + cell)];
          expect_diff += m0 != m1;
          diff += h0[e] != h1[e];
          CHECK(h0[e] == m0);
        }
    CHECK(diff == expect_diff);
  }
}

TEST_CASE("dense: additive masks are exactly 0 or -inf", "[mask][dense]") {
  const uint64_t seed = attnkit_test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t B = 3, Sq = uniform(rng, 2, 19), Sk = uniform(rng, 2, 19);
  const auto ql = random_lengths(rng, B, Sq), kl = random_lengths(rng, B, Sk);
  const auto mask = SinkWindowMask(1, 3) | PrefixLMMask(2);
  for (auto a : {Alignment::BottomRight, Alignment::TopLeft}) {
    const auto boolean = dense_mask_bool(mask, B, Sq, Sk, ql.data(), kl.data(), a);
    const auto additive = dense_mask_additive(mask, B, Sq, Sk, ql.data(), kl.data(), a);
    REQUIRE(additive.size() == boolean.size());
    int64_t bad = 0, zeros = 0, ninfs = 0;
    for (size_t e = 0; e < additive.size(); ++e) {
      const float x = additive[e];
      const bool is_zero = x == 0.0f && !std::signbit(x);
      const bool is_ninf = std::isinf(x) && x < 0;
      zeros += is_zero;
      ninfs += is_ninf;
      bad += boolean[e] ? !is_zero : !is_ninf;
    }
    CHECK(bad == 0);
    CHECK(zeros > 0);
    CHECK(ninfs > 0);
    // The single-sequence overload too.
    const auto one = dense_mask_additive(mask, Sq, Sk, a);
    const auto one_bool = dense_mask_bool(mask, Sq, Sk, a);
    for (size_t e = 0; e < one.size(); ++e) bad += one_bool[e] ? one[e] != 0.0f : !(std::isinf(one[e]) && one[e] < 0);
    CHECK(bad == 0);
  }
}

TEST_CASE("dense: DenseMask and AdditiveMask round-trip, also through the reference", "[mask][dense]") {
  const uint64_t seed = attnkit_test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (int n = 0; n < 6; ++n) {
    const int64_t B = uniform(rng, 1, 3), Sq = uniform(rng, 1, 13), Sk = uniform(rng, 1, 13);
    const int64_t Hq = 4, Hkv = 2, D = 8;
    const Alignment a = n % 2 ? Alignment::TopLeft : Alignment::BottomRight;
    const auto ql = random_lengths(rng, B, Sq), kl = random_lengths(rng, B, Sk);
    const auto mask = (CausalMask{} & SlidingWindowMask(uniform(rng, 1, 6))) | PrefixLMMask(uniform(rng, 0, 3));
    const auto boolean = dense_mask_bool(mask, B, Sq, Sk, ql.data(), kl.data(), a);
    const auto additive = to_additive(boolean);
    const DenseMask as_dense(boolean.data(), Sk, Sq * Sk);
    const AdditiveMask as_additive(additive.data(), Sk, Sq * Sk);
    CHECK(dense_mask_bool(as_dense, B, Sq, Sk, ql.data(), kl.data(), a) == boolean);
    CHECK(dense_mask_bool(as_additive, B, Sq, Sk, ql.data(), kl.data(), a) == boolean);

    // The reference gives bit-identical results with the functor, the dense
    // and the additive form of the same mask.
    auto q = attnkit_test::random_vector<float>(static_cast<size_t>(B * Sq * Hq * D), rng);
    auto k = attnkit_test::random_vector<float>(static_cast<size_t>(B * Sk * Hkv * D), rng);
    auto v = attnkit_test::random_vector<float>(static_cast<size_t>(B * Sk * Hkv * D), rng);
    const Tensor4<const float> qv(q.data(), {B, Sq, Hq, D});
    const Tensor4<const float> kv(k.data(), {B, Sk, Hkv, D});
    const Tensor4<const float> vv(v.data(), {B, Sk, Hkv, D});
    AttentionOptions o;
    o.alignment = a;
    o.q_lens = ql.data();
    o.kv_lens = kl.data();
    const auto r0 = reference_attention(qv, kv, vv, mask, o);
    const auto r1 = reference_attention(qv, kv, vv, as_dense, o);
    const auto r2 = reference_attention(qv, kv, vv, as_additive, o);
    CHECK(r0.out == r1.out);
    CHECK(r0.out == r2.out);
    CHECK(r0.lse.size() == r1.lse.size());
    for (size_t e = 0; e < r0.lse.size(); ++e) {
      CHECK((r0.lse[e] == r1.lse[e] || (std::isinf(r0.lse[e]) && std::isinf(r1.lse[e]))));
      CHECK((r0.lse[e] == r2.lse[e] || (std::isinf(r0.lse[e]) && std::isinf(r2.lse[e]))));
    }
  }
}

TEST_CASE("dense: builders reject lengths beyond the padded shape", "[mask][dense]") {
  const int32_t ql[2] = {3, 6}, kl[2] = {5, -1};
  CHECK_THROWS_WITH(dense_mask_bool(CausalMask{}, 2, 5, 5, ql, nullptr), "attnkit: q_lens[1] (6) must be in [0, 5]");
  CHECK_THROWS_WITH(dense_mask_bool(CausalMask{}, 2, 5, 5, nullptr, kl), "attnkit: kv_lens[1] (-1) must be in [0, 5]");
  CHECK_THROWS_WITH(dense_mask_additive(CausalMask{}, -1, 5, 5, nullptr, nullptr), "attnkit: B (-1) must be >= 0");
  CHECK_THROWS_WITH(dense_mask_bool(CausalMask{}, 1, -2, 5, nullptr, nullptr), "attnkit: Sq (-2) must be >= 0");
  CHECK(dense_mask_bool(CausalMask{}, 0, 4).empty());
}
