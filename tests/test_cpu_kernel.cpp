// CPU fused attention against the fp64 reference: layouts, alignments, GQA
// ratios, head dims, odd lengths, decode, options, dtypes (every mask:
// test_cpu_kernel_masks.cpp).
#include <attnkit/attention.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "support/cpu_check.hpp"
#include "support/test_util.hpp"

using namespace attnkit;
using namespace attnkit_test;

TEST_CASE("fast exp2: relative error and exact zero below the range", "[cpu][exp]") {
  using B = cpu::WideBatch;
  constexpr size_t L = B::size;
  alignas(64) float in[L], out[L];
  double worst = 0.0;
  for (float x0 = -126.0f; x0 < 127.0f; x0 += 0.0137f * L) {
    for (size_t l = 0; l < L; ++l) in[l] = x0 + 0.0137f * static_cast<float>(l);
    cpu::exp2_fast(B::load_aligned(in)).store_aligned(out);
    for (size_t l = 0; l < L; ++l) {
      if (in[l] > 127.0f) continue;
      const double want = std::exp2(static_cast<double>(in[l]));
      worst = std::max(worst, std::abs(out[l] - want) / want);
    }
  }
  INFO("max relative error " << worst);
  CHECK(worst < 4e-7);  // documented in cpu/simd.hpp
  for (size_t l = 0; l < L; ++l) in[l] = l % 2 ? -std::numeric_limits<float>::infinity() : -200.0f - l;
  cpu::exp2_fast(B::load_aligned(in)).store_aligned(out);
  for (size_t l = 0; l < L; ++l) CHECK(out[l] == 0.0f);
}

TEST_CASE("CPU kernel: GQA ratios, MQA and head dims", "[cpu][gqa]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  AttentionOptions o;
  for (int64_t ratio : {1, 4, 8}) {
    Problem<float> pr({2, 63, 63, 8, 8 / ratio, 64, 64}, rng);
    check_against_reference(pr, CausalMask{}, o, "ratio " + std::to_string(ratio));
  }
  Problem<float> mqa({1, 65, 130, 12, 1, 64, 64}, rng);
  check_against_reference(mqa, CausalMask{}, o, "MQA");
  for (int64_t D : {32, 64, 80, 96, 112, 128, 256}) {
    Problem<float> pr({1, 70, 90, 4, 2, D, D}, rng);
    check_against_reference(pr, CausalMask{}, o, "D " + std::to_string(D));
  }
  Problem<float> dv({1, 33, 47, 4, 2, 64, 40}, rng);  // Dv != D
  check_against_reference(dv, FullMask{}, o, "D 64 Dv 40");
}

TEST_CASE("CPU kernel: odd lengths, cross attention and decode", "[cpu][lengths]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  AttentionOptions o;
  for (int64_t n : {1, 7, 63, 65, 257, 1000}) {
    Problem<float> pr({1, n, n, 4, 2, 64, 64}, rng);
    check_against_reference(pr, CausalMask{}, o, "N " + std::to_string(n));
  }
  Problem<float> cross({2, 37, 101, 4, 4, 64, 64}, rng);
  check_against_reference(cross, FullMask{}, o, "cross attention Sq 37 Sk 101");
  for (int64_t sk : {1, 100, 1025, 8192}) {
    for (int64_t sq : {1, 3, 16}) {
      Problem<float> pr({1, sq, sk, 32, 8, 128, 128}, rng);
      check_against_reference(pr, CausalMask{}, o, "decode Sq " + std::to_string(sq) + " Sk " + std::to_string(sk));
    }
  }
  Problem<float> dec_win({2, 1, 5000, 8, 2, 64, 64}, rng);
  check_against_reference(dec_win, SlidingWindowMask(700), o, "decode window");
}

TEST_CASE("CPU kernel: padded and varlen layouts, fully masked rows", "[cpu][layout]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  Problem<float> pr({3, 40, 70, 4, 2, 64, 64}, rng);
  std::vector<int32_t> ql = {40, 17, 0}, kl = {70, 33, 5};
  AttentionOptions o;
  o.q_lens = ql.data();
  o.kv_lens = kl.data();
  check_against_reference(pr, CausalMask{}, o, "padded causal");
  check_against_reference(pr, FullMask{}, o, "padded full");
  // Every row of batch 1 masked: out 0, lse -inf.
  check_against_reference(pr, SlidingWindowMask(1) & ~CausalMask{}, o, "all masked");
  for (float x : pr.out) REQUIRE(x == 0.0f);
  for (float l : pr.lse) REQUIRE((std::isinf(l) && l < 0));
  // Top-left with Sq > Sk: the last queries see every key, the first ones few.
  o.alignment = Alignment::TopLeft;
  check_against_reference(pr, CausalMask{}, o, "padded TL");

  // Varlen: three packed sequences.
  const std::vector<int32_t> cq = {0, 5, 5, 70}, ck = {0, 9, 40, 140};
  const int64_t Tq = 70, Tk = 140, Hq = 6, Hkv = 2, D = 80;
  auto q = random_vector<float>(Tq * Hq * D, rng), k = random_vector<float>(Tk * Hkv * D, rng),
       v = random_vector<float>(Tk * Hkv * D, rng);
  std::vector<float> out(Tq * Hq * D, std::numeric_limits<float>::quiet_NaN()), lse(Hq * Tq);
  Tensor3<const float> Q(q.data(), {Tq, Hq, D}), K(k.data(), {Tk, Hkv, D}), V(v.data(), {Tk, Hkv, D});
  Tensor3<float> O(out.data(), {Tq, Hq, D});
  VarlenSeqs seqs{cq.data(), ck.data(), 3, 0, 0};
  for (Alignment a : {Alignment::BottomRight, Alignment::TopLeft}) {
    AttentionOptions vo;
    vo.alignment = a;
    vo.lse = lse.data();
    for (int pass = 0; pass < 2; ++pass) {
      if (pass == 0) {
        attention_varlen(Q, K, V, O, seqs, CausalMask{}, vo);
        const auto ref = reference_attention_varlen(Q, K, V, seqs, CausalMask{}, vo);
        CHECK(rel_l2(out, ref.out) <= 1e-5);
        CHECK(lse_max_abs_err(lse, ref.lse) <= 1e-4);
      } else {
        attention_varlen(Q, K, V, O, seqs, SlidingWindowMask(6), vo);
        const auto ref = reference_attention_varlen(Q, K, V, seqs, SlidingWindowMask(6), vo);
        CHECK(rel_l2(out, ref.out) <= 1e-5);
        CHECK(lse_max_abs_err(lse, ref.lse) <= 1e-4);
      }
    }
  }
  // Strided views: q as a slice of a fused QKV buffer [B, S, 3, H, D].
  const int64_t B = 2, S = 50, H = 4;
  auto qkv = random_vector<float>(B * S * 3 * H * 64, rng);
  Tensor4<const float> Qs(qkv.data(), {B, S, H, 64}, {S * 3 * H * 64, 3 * H * 64, 64, 1});
  Tensor4<const float> Ks(qkv.data() + H * 64, {B, S, H, 64}, {S * 3 * H * 64, 3 * H * 64, 64, 1});
  Tensor4<const float> Vs(qkv.data() + 2 * H * 64, {B, S, H, 64}, {S * 3 * H * 64, 3 * H * 64, 64, 1});
  std::vector<float> o2(B * S * H * 64);
  attention(Qs, Ks, Vs, Tensor4<float>(o2.data(), {B, S, H, 64}), CausalMask{});
  CHECK(rel_l2(o2, reference_attention(Qs, Ks, Vs, CausalMask{}).out) <= 1e-5);
}

TEST_CASE("CPU kernel: softcap, ALiBi, sink logits, scale", "[cpu][options]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  Problem<float> pr({2, 70, 90, 4, 2, 64, 64}, rng, 3.0f);
  std::vector<float> slopes = {0.5f, 0.25f, 0.125f, 0.0625f}, sinks = {0.3f, -1.0f, 2.0f, 5.0f};
  AttentionOptions o;
  o.softcap = 5.0f;
  check_against_reference(pr, CausalMask{}, o, "softcap");
  o = {};
  o.alibi_slopes = slopes.data();
  check_against_reference(pr, CausalMask{}, o, "alibi");
  o = {};
  o.sink_logits = sinks.data();
  check_against_reference(pr, CausalMask{}, o, "sink");
  o.softcap = 2.0f;
  o.alibi_slopes = slopes.data();
  o.scale = 0.3f;
  check_against_reference(pr, SlidingWindowMask(20), o, "all options");
  Problem<float> dec({2, 1, 3000, 4, 2, 64, 64}, rng);
  check_against_reference(dec, CausalMask{}, o, "all options decode");
}

TEST_CASE("CPU kernel: f16 and bf16 storage within 2x the naive same-dtype error", "[cpu][dtype]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  AttentionOptions o;
  for (const Shape& sh : {Shape{1, 100, 100, 8, 2, 128, 128}, Shape{2, 1, 700, 8, 2, 64, 64}}) {
    Problem<half> ph(sh, rng);
    Problem<bfloat16> pb(sh, rng);
    check_against_reference(ph, CausalMask{}, o, "f16 causal");
    check_against_reference(pb, CausalMask{}, o, "bf16 causal");
    check_against_reference(pb, SlidingWindowMask(33), o, "bf16 window");
  }
}

TEST_CASE("CPU kernel: results are bit-identical whatever the thread count", "[cpu][threads]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (const Shape& sh : {Shape{2, 130, 130, 8, 2, 64, 64}, Shape{1, 2, 4000, 8, 2, 64, 64}}) {
    Problem<float> pr(sh, rng);
    std::vector<std::vector<float>> outs;
    for (int t : {1, 2, 3, 4}) {
      AttentionOptions o;
      o.num_threads = t;
      attention(pr.Q(), pr.K(), pr.V(), pr.O(), CausalMask{}, o);
      outs.push_back(pr.out);
    }
    for (size_t n = 1; n < outs.size(); ++n)
      CHECK(std::memcmp(outs[0].data(), outs[n].data(), outs[0].size() * 4) == 0);
  }
}

TEST_CASE("CPU kernel: huge logits stay finite", "[cpu][overflow]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  // |scale * q.k| around 1e4: the online softmax must rescale, not overflow.
  Problem<float> pr({1, 40, 300, 2, 1, 64, 64}, rng, 12.0f);
  AttentionOptions o;
  o.scale = 1.0f;
  // fp32 logits near 1e4 carry ~1e-3 absolute rounding in any fp32 kernel,
  // which exp() turns into relative weight error: the point here is finiteness.
  check_against_reference(pr, CausalMask{}, o, "huge logits", 1e-3);
  REQUIRE(all_finite(pr.lse));
  Problem<float> dec({1, 1, 3000, 2, 1, 64, 64}, rng, 12.0f);
  check_against_reference(dec, FullMask{}, o, "huge logits decode", 1e-3);
}

TEST_CASE("merge_states: LSE merge of split keys equals one softmax", "[cpu][merge]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t Sq = 5, Sk = 300, H = 3, D = 32;
  auto q = random_vector<float>(Sq * H * D, rng), k = random_vector<float>(Sk * H * D, rng),
       v = random_vector<float>(Sk * H * D, rng);
  const int64_t cut = 111;
  // Parts: keys [0, cut) and [cut, Sk) through the front door, each with LSE.
  std::vector<float> oa(Sq * H * D), ob(Sq * H * D), om(Sq * H * D), la(H * Sq), lb(H * Sq), lm(Sq * H);
  Tensor4<const float> Q(q.data(), {1, Sq, H, D});
  AttentionOptions o;
  o.alignment = Alignment::TopLeft;
  o.lse = la.data();
  attention(Q, Tensor4<const float>(k.data(), {1, cut, H, D}), Tensor4<const float>(v.data(), {1, cut, H, D}),
            Tensor4<float>(oa.data(), {1, Sq, H, D}), FullMask{}, o);
  o.lse = lb.data();
  attention(Q, Tensor4<const float>(k.data() + cut * H * D, {1, Sk - cut, H, D}),
            Tensor4<const float>(v.data() + cut * H * D, {1, Sk - cut, H, D}), Tensor4<float>(ob.data(), {1, Sq, H, D}),
            FullMask{}, o);
  // lse from the kernel is [B, H, Sq]; merge_state wants [rows, heads].
  std::vector<float> sa(Sq * H), sb(Sq * H);
  for (int64_t i = 0; i < Sq; ++i)
    for (int64_t h = 0; h < H; ++h) {
      sa[i * H + h] = la[h * Sq + i];
      sb[i * H + h] = lb[h * Sq + i];
    }
  sb[0] = -std::numeric_limits<float>::infinity();  // an absent part for row 0, head 0
  merge_state(Tensor3<const float>(oa.data(), {Sq, H, D}), sa.data(), Tensor3<const float>(ob.data(), {Sq, H, D}),
              sb.data(), Tensor3<float>(om.data(), {Sq, H, D}), lm.data());
  AttentionOptions ro;
  ro.alignment = Alignment::TopLeft;
  const auto ref = reference_attention(Q, Tensor4<const float>(k.data(), {1, Sk, H, D}),
                                       Tensor4<const float>(v.data(), {1, Sk, H, D}), FullMask{}, ro);
  for (int64_t i = 0; i < Sq; ++i)
    for (int64_t h = 0; h < H; ++h) {
      if (i == 0 && h == 0) {
        CHECK(lm[0] == Approx(sa[0]));
        for (int64_t d = 0; d < D; ++d) CHECK(om[d] == Approx(oa[d]));
        continue;
      }
      CHECK(lm[i * H + h] == Approx(ref.lse[h * Sq + i]).epsilon(1e-5));
      for (int64_t d = 0; d < D; ++d)
        CHECK(om[(i * H + h) * D + d] == Approx(ref.out[(i * H + h) * D + d]).margin(1e-5));
    }
  // All parts absent: zeros and -inf, never NaN.
  std::vector<float> ninf(Sq * H, -std::numeric_limits<float>::infinity());
  merge_state(Tensor3<const float>(oa.data(), {Sq, H, D}), ninf.data(), Tensor3<const float>(ob.data(), {Sq, H, D}),
              ninf.data(), Tensor3<float>(om.data(), {Sq, H, D}), lm.data());
  for (float x : om) REQUIRE(x == 0.0f);
  for (float x : lm) REQUIRE((std::isinf(x) && x < 0));
}

TEST_CASE("Document mask without q_ids needs Lq <= Lk (no out-of-bounds read)", "[cpu][document]") {
  std::mt19937_64 rng(fresh_seed());
  Problem<float> pr({1, 9, 5, 2, 1, 32, 32}, rng);  // more queries than keys
  const std::vector<int32_t> kv_docs = {0, 0, 1, 1, 1};
  const DocumentMask doc(kv_docs.data());
  pr.poison();
  const std::vector<float> before = pr.out;
  CHECK_THROWS_WITH(attention(pr.Q(), pr.K(), pr.V(), pr.O(), doc & CausalMask{}),
                    Catch::Contains("document mask without q_ids") && Catch::Contains("pass q_ids"));
  CHECK(std::memcmp(before.data(), pr.out.data(), before.size() * 4) == 0);  // nothing written
  CHECK_THROWS_AS(reference_attention(pr.Q(), pr.K(), pr.V(), doc), Error);
  // With q_ids the same problem is well defined.
  const std::vector<int32_t> q_docs = {0, 0, 0, 0, 1, 1, 1, 1, 1};
  DocumentMask with_q(kv_docs.data());
  with_q.q_ids = q_docs.data();
  check_against_reference(pr, with_q, AttentionOptions{}, "document with q_ids, Lq > Lk");
}
