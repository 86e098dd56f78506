// MoBA (DESIGN §5) on the CPU: the selection against a brute-force gate
// written here in double precision, and the attention against the fp64
// reference run under exactly the mask the selection implies.
#include <algorithm>
// GCC 12 false positive inside its AVX-512 intrinsic headers (as in bench/).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <attnkit/attention.hpp>
#include <attnkit/moba/moba.hpp>
#include <attnkit/rope/rope.hpp>
#pragma GCC diagnostic pop
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "support/cpu_check.hpp"
#include "support/moba_oracle.hpp"
#include "support/test_util.hpp"

using namespace attnkit;
using namespace attnkit_test;

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// Padded problem: checks moba_select against the brute force.
template <class T>
void check_selection_padded(const Problem<T>& pr, const MobaConfig& cfg, const AttentionOptions& o,
                            const MobaSelection& sel) {
  const Shape& s = pr.s;
  std::vector<SeqRows> seqs;
  for (int64_t b = 0; b < s.B; ++b)
    seqs.push_back({b * s.Sq, b * s.Sk, o.q_lens ? o.q_lens[b] : s.Sq, o.kv_lens ? o.kv_lens[b] : s.Sk});
  check_selection(pr.q, pr.k, s.Hq, s.Hkv, s.D, seqs, o.alignment, cfg, sel);
}

// MoBA through the front door vs the fp64 reference under the selection's mask.
template <class T>
MobaSelection check_moba(Problem<T>& pr, const MobaConfig& cfg, AttentionOptions o, const std::string& what,
                         bool check_selection = true) {
  INFO(what << " (Bs " << cfg.block_size << ", top_k " << cfg.top_k << ")");
  pr.poison();
  o.lse = pr.lse.data();
  attention(pr.Q(), pr.K(), pr.V(), pr.O(), cfg, o);
  MobaSelection sel = moba_select(pr.Q(), pr.K(), cfg, o);
  if (check_selection) check_selection_padded(pr, cfg, o, sel);
  const ReferenceOutput ref = reference_attention(pr.Q(), pr.K(), pr.V(), sel.mask(), o);
  check_error_bound(pr, ref, sel.mask(), o, lse_max_abs_err(pr.lse, ref.lse));
  return sel;
}

}  // namespace

TEST_CASE("MoBA: selection matches a brute-force gate; attention matches the fp64 reference", "[moba]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  struct Case {
    Shape s;
    MobaConfig cfg;
    const char* what;
  };
  const Case cases[] = {
      {{1, 203, 203, 4, 2, 40, 40}, {16, 3}, "prefill, Sk not a multiple of Bs, GQA 2"},
      {{1, 203, 203, 4, 2, 40, 24}, {7, 4}, "odd block size, Dv != D"},
      {{2, 77, 77, 3, 3, 32, 32}, {8, 1}, "top_k 1: own block only"},
      {{1, 600, 600, 8, 2, 64, 64}, {32, 3}, "longer prefill, GQA 4 (full lane batches)"},
      {{1, 300, 300, 8, 1, 48, 48}, {32, 4}, "MQA"},
      {{1, 1, 3001, 8, 2, 64, 64}, {64, 4}, "decode: one query over a long cache"},
      {{2, 5, 700, 4, 1, 32, 32}, {50, 3}, "decode: 5 queries"},
      {{1, 30, 20, 2, 1, 16, 16}, {4, 2}, "Sq > Sk: rows with p < 0 see nothing"},
  };
  for (const Case& c : cases) {
    Problem<float> pr(c.s, rng);
    check_moba(pr, c.cfg, {}, c.what);
  }
}

TEST_CASE("MoBA: top_k beyond the past blocks is full causal attention", "[moba]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  Problem<float> pr({1, 150, 181, 4, 2, 32, 32}, rng);
  const MobaConfig cfg{16, 50};
  const MobaSelection sel = check_moba(pr, cfg, {}, "top_k 50 of 12 blocks");
  for (int64_t i = 0; i < pr.s.Sq; ++i) {
    const int64_t own = (i + 31) / 16;
    std::vector<int32_t> all;
    for (int32_t c = 0; c <= own; ++c) all.push_back(c);
    REQUIRE(sel.chosen(0, 3, i) == all);
  }
  const ReferenceOutput causal = reference_attention(pr.Q(), pr.K(), pr.V(), CausalMask{});
  CHECK(rel_l2(pr.out, causal.out) <= 1e-5);
}

TEST_CASE("MoBA: gate ties go to the lower block index", "[moba][ties]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t Bs = 8;
  SECTION("every block a copy of block 0: all scores equal") {
    Problem<float> pr({1, 70, 70, 2, 1, 16, 16}, rng);
    for (int64_t j = Bs; j < pr.s.Sk; ++j)
      std::copy_n(&pr.k[static_cast<size_t>((j % Bs) * pr.s.D)], pr.s.D, &pr.k[static_cast<size_t>(j * pr.s.D)]);
    // The last block is partial (70 = 8 * 8 + 6): its mean differs, but it is never in the past of a query.
    const MobaConfig cfg{Bs, 3};
    const MobaSelection sel = check_moba(pr, cfg, {}, "all blocks equal");
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t i = 0; i < pr.s.Sq; ++i) {
        const int32_t own = static_cast<int32_t>(i / Bs);
        std::vector<int32_t> want;
        for (int32_t c = 0; c < std::min(own, 2); ++c) want.push_back(c);
        want.push_back(own);
        INFO("h " << h << " i " << i);
        REQUIRE(sel.chosen(0, h, i) == want);
      }
  }
  SECTION("two duplicated winning blocks: the lower one is taken") {
    Problem<float> pr({1, 64, 64, 1, 1, 16, 16}, rng);
    for (auto& x : pr.q) x = std::abs(x) + 0.1f;  // q . mean grows with the mean
    for (int64_t blk : {2, 5})
      for (int64_t j = blk * Bs; j < (blk + 1) * Bs; ++j)
        for (int64_t d = 0; d < pr.s.D; ++d) pr.k[static_cast<size_t>(j * pr.s.D + d)] = 3.0f + 0.01f * (j % Bs);
    const MobaConfig cfg{Bs, 2};
    const MobaSelection sel = check_moba(pr, cfg, {}, "blocks 2 and 5 equal and best");
    for (int64_t i = 6 * Bs; i < pr.s.Sq; ++i) REQUIRE(sel.chosen(0, 0, i) == std::vector<int32_t>{2, int32_t(i / Bs)});
  }
}

TEST_CASE("MoBA: padded batches, alignments, varlen", "[moba][layout]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  SECTION("padded with per-sequence lengths (incl. an empty cache)") {
    Problem<float> pr({3, 150, 160, 4, 2, 32, 32}, rng);
    const int32_t q_lens[] = {150, 61, 7}, kv_lens[] = {160, 133, 0};
    AttentionOptions o;
    o.q_lens = q_lens;
    o.kv_lens = kv_lens;
    check_moba(pr, {16, 3}, o, "padded");
    // Padding rows and rows of the empty cache: out 0, lse -inf.
    for (int64_t i = 0; i < pr.s.Sq; ++i) {
      REQUIRE(pr.out[static_cast<size_t>(((2 * pr.s.Sq + i) * pr.s.Hq) * pr.s.Dv)] == 0.0f);
      REQUIRE(std::isinf(pr.lse[static_cast<size_t>(2 * pr.s.Hq * pr.s.Sq + i)]));
    }
  }
  SECTION("top-left alignment: queries shorter and longer than the keys") {
    AttentionOptions o;
    o.alignment = Alignment::TopLeft;
    Problem<float> a({1, 60, 200, 4, 2, 32, 32}, rng);
    check_moba(a, {16, 3}, o, "top-left, Sq < Sk");
    // Queries past the last key: own blocks hold no key, the partial last block is a candidate.
    Problem<float> b({1, 250, 203, 2, 1, 32, 32}, rng);
    check_moba(b, {16, 3}, o, "top-left, Sq > Sk");
  }
  SECTION("varlen matches padded sequence by sequence") {
    const int32_t lens_q[] = {50, 1, 130}, lens_k[] = {50, 300, 130};
    const int32_t cu_q[] = {0, 50, 51, 181}, cu_k[] = {0, 50, 350, 480};
    const int64_t Hq = 6, Hkv = 2, D = 32;
    auto q = random_vector<float>(181 * Hq * D, rng), k = random_vector<float>(480 * Hkv * D, rng),
         v = random_vector<float>(480 * Hkv * D, rng);
    std::vector<float> out(181 * Hq * D, kNaN), lse(Hq * 181, kNaN);
    const VarlenSeqs seqs{cu_q, cu_k, 3, 0, 0};
    const MobaConfig cfg{32, 3};
    AttentionOptions o;
    o.lse = lse.data();
    const Tensor3<const float> Q(q.data(), {181, Hq, D}), K(k.data(), {480, Hkv, D}), V(v.data(), {480, Hkv, D});
    attention_varlen(Q, K, V, Tensor3<float>(out.data(), {181, Hq, D}), seqs, cfg, o);
    const MobaSelection sel = moba_select_varlen(Q, K, seqs, cfg, o);
    const ReferenceOutput ref = reference_attention_varlen(Q, K, V, seqs, sel.mask(), o);
    CHECK(rel_l2(out, ref.out) <= 1e-5);
    CHECK(lse_max_abs_err(lse, ref.lse) <= 1e-4);
    // Each sequence alone through the padded path: same selection, same numbers (to 1e-6).
    for (int64_t b = 0; b < 3; ++b) {
      Problem<float> one({1, lens_q[b], lens_k[b], Hq, Hkv, D, D}, rng);
      std::copy_n(&q[static_cast<size_t>(cu_q[b] * Hq * D)], one.q.size(), one.q.begin());
      std::copy_n(&k[static_cast<size_t>(cu_k[b] * Hkv * D)], one.k.size(), one.k.begin());
      std::copy_n(&v[static_cast<size_t>(cu_k[b] * Hkv * D)], one.v.size(), one.v.begin());
      const MobaSelection s1 = check_moba(one, cfg, {}, "one sequence of the varlen batch");
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t i = 0; i < lens_q[b]; ++i) REQUIRE(s1.chosen(0, h, i) == sel.chosen(b, h, i));
      float worst = 0.0f;
      for (size_t n = 0; n < one.out.size(); ++n)
        worst = std::max(worst, std::abs(one.out[n] - out[static_cast<size_t>(cu_q[b] * Hq * D) + n]));
      INFO("sequence " << b << ": max |padded - varlen| = " << worst);
      // Not necessarily bit-identical: a lone 1-query sequence runs on the narrow
      // decode batches, whose code the compiler may contract differently.
      CHECK(worst <= 1e-6f);
    }
  }
}

TEST_CASE("MoBA: own-block and selected-block parts merged by LSE equal one softmax", "[moba][merge]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  Problem<float> pr({1, 140, 140, 4, 2, 32, 32}, rng);
  const MobaConfig cfg{16, 3};
  AttentionOptions o;
  o.lse = pr.lse.data();
  attention(pr.Q(), pr.K(), pr.V(), pr.O(), cfg, o);
  const MobaSelection sel = moba_select(pr.Q(), pr.K(), cfg);
  const MobaSelectionMask m = sel.mask();
  const int64_t Bs = cfg.block_size;
  // The two parts through the library's ordinary kernel with custom masks.
  auto own =
      custom_mask([m, Bs](const SeqCtx& c, int64_t i, int64_t j) { return j / Bs == c.pos(i) / Bs && m(c, i, j); });
  auto past =
      custom_mask([m, Bs](const SeqCtx& c, int64_t i, int64_t j) { return j / Bs < c.pos(i) / Bs && m(c, i, j); });
  const int64_t Sq = pr.s.Sq, Hq = pr.s.Hq, Dv = pr.s.Dv;
  std::vector<float> oa(pr.out.size()), ob(pr.out.size()), la(Hq * Sq), lb(Hq * Sq);
  AttentionOptions oo;
  oo.lse = la.data();
  attention(pr.Q(), pr.K(), pr.V(), Tensor4<float>(oa.data(), {1, Sq, Hq, Dv}), own, oo);
  oo.lse = lb.data();
  attention(pr.Q(), pr.K(), pr.V(), Tensor4<float>(ob.data(), {1, Sq, Hq, Dv}), past, oo);
  std::vector<float> sa(Sq * Hq), sb(Sq * Hq), sm(Sq * Hq), om(pr.out.size());
  for (int64_t i = 0; i < Sq; ++i)
    for (int64_t h = 0; h < Hq; ++h) {
      sa[i * Hq + h] = la[h * Sq + i];
      sb[i * Hq + h] = lb[h * Sq + i];
    }
  merge_state(Tensor3<const float>(oa.data(), {Sq, Hq, Dv}), sa.data(), Tensor3<const float>(ob.data(), {Sq, Hq, Dv}),
              sb.data(), Tensor3<float>(om.data(), {Sq, Hq, Dv}), sm.data());
  const ReferenceOutput ref = reference_attention(pr.Q(), pr.K(), pr.V(), m);
  CHECK(rel_l2(om, ref.out) <= 1e-5);
  CHECK(rel_l2(pr.out, ref.out) <= 1e-5);
  double lse_err = 0.0;
  for (int64_t i = 0; i < Sq; ++i)
    for (int64_t h = 0; h < Hq; ++h)
      lse_err = std::max(lse_err, std::abs(static_cast<double>(sm[i * Hq + h]) - ref.lse[h * Sq + i]));
  CHECK(lse_err <= 1e-4);
  // Rows of the first block have no past part: lse_b = -inf, the merge keeps part a alone.
  CHECK(std::isinf(sb[0]));
}

TEST_CASE("MoBA: bit-identical results whatever the thread count", "[moba][threads]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (const Shape& sh : {Shape{2, 500, 500, 8, 2, 64, 64}, Shape{1, 3, 2500, 8, 2, 64, 64}}) {
    Problem<float> pr(sh, rng);
    std::vector<std::vector<float>> outs, lses;
    for (int t : {1, 2, 3}) {
      AttentionOptions o;
      o.num_threads = t;
      o.lse = pr.lse.data();
      attention(pr.Q(), pr.K(), pr.V(), pr.O(), MobaConfig{32, 3}, o);
      outs.push_back(pr.out);
      lses.push_back(pr.lse);
    }
    for (size_t n = 1; n < outs.size(); ++n) {
      CHECK(std::memcmp(outs[0].data(), outs[n].data(), outs[0].size() * 4) == 0);
      CHECK(std::memcmp(lses[0].data(), lses[n].data(), lses[0].size() * 4) == 0);
    }
  }
}

TEST_CASE("MoBA: hybrid layers through the front door (full or MoBA by argument)", "[moba][hybrid]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  Problem<float> pr({1, 257, 257, 4, 2, 32, 32}, rng);
  const ReferenceOutput causal = reference_attention(pr.Q(), pr.K(), pr.V(), CausalMask{});
  std::vector<float> full(pr.out.size()), moba_all(pr.out.size()), moba_sparse(pr.out.size());
  const int64_t sh[4] = {1, 257, 4, 32};
  attention(pr.Q(), pr.K(), pr.V(), Tensor4<float>(full.data(), sh), CausalMask{});           // a full layer
  attention(pr.Q(), pr.K(), pr.V(), Tensor4<float>(moba_all.data(), sh), MobaConfig{32, 9});  // every block
  attention(pr.Q(), pr.K(), pr.V(), Tensor4<float>(moba_sparse.data(), sh), MobaConfig{32, 2});
  CHECK(rel_l2(full, causal.out) <= 1e-5);
  CHECK(rel_l2(moba_all, causal.out) <= 1e-5);
  const double sparse_vs_full = rel_l2(moba_sparse, causal.out);
  INFO("MoBA top_k 2 vs full causal rel_l2 " << sparse_vs_full);
  CHECK(sparse_vs_full > 1e-3);  // the argument really changes the layer
  const ReferenceOutput ref =
      reference_attention(pr.Q(), pr.K(), pr.V(), moba_select(pr.Q(), pr.K(), MobaConfig{32, 2}).mask());
  CHECK(rel_l2(moba_sparse, ref.out) <= 1e-5);
}

TEST_CASE("MoBA: softcap, ALiBi, sink logits and scale", "[moba][options]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  Problem<float> pr({1, 180, 180, 4, 2, 32, 32}, rng);
  const float slopes[] = {0.5f, 0.25f, 0.125f, 0.0625f}, sinks[] = {0.3f, -1.0f, 2.0f, 0.0f};
  AttentionOptions o;
  o.scale = 0.4f;
  o.softcap = 5.0f;
  o.alibi_slopes = slopes;
  check_moba(pr, {16, 3}, o, "scale, softcap, ALiBi");
  AttentionOptions s;
  s.sink_logits = sinks;
  check_moba(pr, {16, 3}, s, "sink logits");
}

TEST_CASE("MoBA: bf16 and f16 storage within 2x the naive same-dtype error", "[moba][dtype]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  Problem<bfloat16> b({1, 190, 190, 4, 2, 64, 64}, rng);
  check_moba(b, {16, 3}, {}, "bf16", false);
  Problem<half> h({1, 1, 900, 4, 1, 64, 64}, rng);
  check_moba(h, {64, 3}, {}, "f16 decode", false);
}

TEST_CASE("MoBA: RoPE rotates q and k before the gate and the attention", "[moba][rope]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  Problem<float> pr({1, 150, 150, 4, 2, 32, 32}, rng);
  const RopeConfig rope = RopeConfig::standard(RopeStyle::Half, 100.0);
  const MobaConfig cfg{16, 3};
  AttentionOptions o;
  o.rope = &rope;
  o.lse = pr.lse.data();
  attention(pr.Q(), pr.K(), pr.V(), pr.O(), cfg, o);
  const MobaSelection sel = moba_select(pr.Q(), pr.K(), cfg, o);
  // The same rotation done here: explicit positions 0..N-1, seq_len N.
  Problem<float> rot = pr;
  std::vector<int64_t> pos(150);
  for (int64_t t = 0; t < 150; ++t) pos[static_cast<size_t>(t)] = t;
  ApplyRopeOptions ro;
  ro.positions = pos.data();
  ro.seq_len = 150;
  apply_rope(Tensor4<float>(rot.q.data(), {1, 150, 4, 32}), rope, ro);
  apply_rope(Tensor4<float>(rot.k.data(), {1, 150, 2, 32}), rope, ro);
  const MobaSelection sel_rot = check_moba(rot, cfg, {}, "pre-rotated q and k");
  for (int64_t h = 0; h < 4; ++h)
    for (int64_t i = 0; i < 150; ++i) REQUIRE(sel.chosen(0, h, i) == sel_rot.chosen(0, h, i));
  CHECK(std::memcmp(pr.out.data(), rot.out.data(), pr.out.size() * 4) == 0);
  CHECK(std::memcmp(pr.lse.data(), rot.lse.data(), pr.lse.size() * 4) == 0);
  // The rotation matters for the gate: the unrotated selection differs somewhere.
  const MobaSelection plain = moba_select(pr.Q(), pr.K(), cfg);
  CHECK(plain.blocks != sel.blocks);
}

TEST_CASE("MoBA: block means, incremental update equals recomputation", "[moba][means]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t B = 2, S = 300, H = 2, D = 24, Bs = 32;
  const auto k = random_vector<float>(B * S * H * D, rng);
  const Tensor4<const float> K(k.data(), {B, S, H, D});
  MobaBlockMeans fresh(B, H, D, Bs);
  fresh.update(K);
  // Means against double sums.
  double max_err = 0.0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t c = 0; c < fresh.blocks(b); ++c)
        for (int64_t d = 0; d < D; ++d) {
          double m = 0.0;
          const int64_t j1 = std::min(S, (c + 1) * Bs);
          for (int64_t j = c * Bs; j < j1; ++j) m += k[static_cast<size_t>(((b * S + j) * H + h) * D + d)];
          max_err = std::max(max_err, std::abs(fresh.mean(b, h, c, d) - m / static_cast<double>(j1 - c * Bs)));
        }
  CHECK(max_err <= 1e-6);
  // A growing cache: token by token at first, then in uneven chunks; no capacity reserved (it grows).
  MobaBlockMeans inc(B, H, D, Bs);
  std::vector<int32_t> lens(B, 0);
  std::uniform_int_distribution<int32_t> step(1, 45);
  while (lens[0] < S || lens[1] < S) {
    for (int64_t b = 0; b < B; ++b)
      lens[b] = std::min<int32_t>(static_cast<int32_t>(S), lens[b] + (lens[b] < 40 ? 1 : step(rng)));
    inc.update(K, lens.data());
  }
  int64_t differ = 0;
  for (int64_t b = 0; b < B; ++b) {
    REQUIRE(inc.tokens(b) == S);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t c = 0; c < fresh.blocks(b); ++c)
        for (int64_t d = 0; d < D; ++d) differ += inc.mean(b, h, c, d) != fresh.mean(b, h, c, d);  // bit-identical
  }
  CHECK(differ == 0);
  // Shrinking is an error that names the rule.
  const int32_t shorter[] = {10, 300};
  REQUIRE_THROWS_WITH(inc.update(K, shorter),
                      "attnkit: kv length of sequence 0 (10) must be >= the keys already pooled (300); a KV cache only "
                      "grows (call reset() to start over)");
}

TEST_CASE("MoBA: decode over a growing cache with cached block means", "[moba][decode]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t Smax = 700, Hq = 4, Hkv = 1, D = 32, Bs = 64;
  const auto kc = random_vector<float>(Smax * Hkv * D, rng), vc = random_vector<float>(Smax * Hkv * D, rng);
  const auto qs = random_vector<float>(Smax * Hq * D, rng);
  const MobaConfig cfg{Bs, 3};
  MobaBlockMeans means(1, Hkv, D, Bs, Smax);
  const Tensor4<const float> K(kc.data(), {1, Smax, Hkv, D}), V(vc.data(), {1, Smax, Hkv, D});
  for (int32_t len : {1, 64, 65, 200, 511, 700}) {
    INFO("cache length " << len);
    const int32_t lens[] = {len}, qlen[] = {1};
    means.update(K, lens);
    const Tensor4<const float> Q(&qs[static_cast<size_t>((len - 1) * Hq * D)], {1, 1, Hq, D});
    std::vector<float> o1(Hq * D, kNaN), o2(Hq * D, kNaN), l1(Hq), l2(Hq);
    AttentionOptions o;
    o.kv_lens = lens;
    o.q_lens = qlen;
    o.lse = l1.data();
    moba_attention(Q, K, V, Tensor4<float>(o1.data(), {1, 1, Hq, D}), cfg, means, o);
    o.lse = l2.data();
    attention(Q, K, V, Tensor4<float>(o2.data(), {1, 1, Hq, D}), cfg, o);
    REQUIRE(std::memcmp(o1.data(), o2.data(), o1.size() * 4) == 0);
    REQUIRE(std::memcmp(l1.data(), l2.data(), l1.size() * 4) == 0);
    const MobaSelection sel = moba_select(Q, K, cfg, o, &means);
    const ReferenceOutput ref = reference_attention(Q, K, V, sel.mask(), o);
    CHECK(rel_l2(o1, ref.out) <= 1e-5);
    for (int64_t h = 0; h < Hq; ++h) CHECK(sel.chosen(0, h, 0).size() == std::min<size_t>(3, (len - 1) / Bs + 1));
  }
}

TEST_CASE("MoBA: validation errors name the argument and leave outputs untouched", "[moba][validation]") {
  std::mt19937_64 rng(fresh_seed());
  Problem<float> pr({1, 20, 20, 2, 1, 16, 16}, rng);
  AttentionOptions o;
  o.lse = pr.lse.data();
  auto untouched = [&] {
    for (float x : pr.out)
      if (!std::isnan(x)) return false;
    for (float x : pr.lse)
      if (!std::isnan(x)) return false;
    return true;
  };
  REQUIRE_THROWS_WITH(attention(pr.Q(), pr.K(), pr.V(), pr.O(), MobaConfig{0, 3}, o),
                      "attnkit: moba block_size (0) must be >= 1");
  REQUIRE_THROWS_WITH(attention(pr.Q(), pr.K(), pr.V(), pr.O(), MobaConfig{8, 0}, o),
                      "attnkit: moba top_k (0) must be >= 1 (it counts the query's own block)");
  const int32_t bad_lens[] = {21};
  AttentionOptions ob = o;
  ob.kv_lens = bad_lens;
  REQUIRE_THROWS_WITH(attention(pr.Q(), pr.K(), pr.V(), pr.O(), MobaConfig{8, 3}, ob),
                      "attnkit: kv_lens[0] (21) must be in [0, Sk = 20]");
  MobaBlockMeans stale(1, 1, 16, 8);
  const int32_t ten[] = {10};
  stale.update(pr.K(), ten);
  REQUIRE_THROWS_WITH(moba_attention(pr.Q(), pr.K(), pr.V(), pr.O(), MobaConfig{8, 3}, stale, o),
                      "attnkit: moba means tokens of sequence 0 (10) must equal its kv length (20); update() the "
                      "means first");
  REQUIRE_THROWS_WITH(moba_attention(pr.Q(), pr.K(), pr.V(), pr.O(), MobaConfig{16, 3}, stale, o),
                      "attnkit: moba means block_size (8) must equal the config's block_size (16)");
  const RopeConfig rerope = RopeConfig::rerope(RopeStyle::Half, 8.0);
  AttentionOptions orr = o;
  orr.rope = &rerope;
  REQUIRE_THROWS_WITH(attention(pr.Q(), pr.K(), pr.V(), pr.O(), MobaConfig{8, 3}, orr),
                      Catch::Contains("cannot be combined with MoBA"));
  CHECK(untouched());
  // moba_select takes mutable views too, and validates the config.
  const Tensor4<float> qm(pr.q.data(), {1, 20, 2, 16}), km(pr.k.data(), {1, 20, 1, 16});
  const std::vector<int32_t> c = moba_select(qm, km, MobaConfig{8, 2}).chosen(0, 1, 19);
  REQUIRE(c.size() == 2);
  CHECK(c[0] < 2);
  CHECK(c[1] == 2);
  REQUIRE_THROWS_WITH(moba_select(qm, km, MobaConfig{8, -1}),
                      "attnkit: moba top_k (-1) must be >= 1 (it counts the query's own block)");
}
