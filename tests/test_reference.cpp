// The fp64 reference is the oracle of every kernel test, so it is checked
// against an independent scalar triple loop written here from DESIGN.md: its
// own indexing (no AttentionParams), its own positions, masks as plain
// formulas, softcap / ALiBi / sink applied as documented in core/options.hpp.
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "support/test_util.hpp"

namespace {

using namespace attnkit;
const double kInf = std::numeric_limits<double>::infinity();

int64_t uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

// allowed(b, h, i, j, p) with p the query's position.
using Rule = std::function<bool(int64_t, int64_t, int64_t, int64_t, int64_t)>;
// element(b, row, head, d) of one operand, in whatever layout the test chose.
using Element = std::function<double(int64_t, int64_t, int64_t, int64_t)>;

// The options are floats (as in AttentionOptions); the loop computes with
// exactly those values in double.
struct Extras {
  float scale = 0.0f;  // 0 = 1/sqrt(D), itself a float
  float softcap = 0.0f;
  std::vector<float> alibi, sink;
};

// One sequence's attention for every query head, written as the definition:
// logits, max, exponentials, sums. Results go through `put_out` / `put_lse`.
struct Scalar {
  int64_t Hq, Hkv, D, Dv;
  bool top_left;
  Extras x;

  template <class PutOut, class PutLse>
  void sequence(int64_t b, int64_t lq, int64_t lk, const Element& q, const Element& k, const Element& v,
                const Rule& allowed, PutOut&& put_out, PutLse&& put_lse) const {
    const double scale = x.scale != 0.0f ? x.scale : 1.0f / std::sqrt(static_cast<float>(D));
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t hk = h / (Hq / Hkv);
      for (int64_t i = 0; i < lq; ++i) {
        const int64_t p = top_left ? i : i + (lk - lq);
        std::vector<double> logit(static_cast<size_t>(lk), -kInf);
        double mx = -kInf;
        for (int64_t j = 0; j < lk; ++j) {
          if (!allowed(b, h, i, j, p)) continue;
          double s = 0.0;
          for (int64_t d = 0; d < D; ++d) s += q(b, i, h, d) * k(b, j, hk, d);
          s *= scale;
          if (x.softcap > 0.0f) s = x.softcap * std::tanh(s / x.softcap);
          if (!x.alibi.empty()) s -= static_cast<double>(x.alibi[h]) * static_cast<double>(p - j);
          logit[j] = s;
          mx = std::max(mx, s);
        }
        if (mx == -kInf) {  // no allowed key
          for (int64_t d = 0; d < Dv; ++d) put_out(b, i, h, d, 0.0);
          put_lse(b, i, h, -kInf);
          continue;
        }
        double sum = 0.0;
        for (int64_t j = 0; j < lk; ++j)
          if (logit[j] != -kInf) sum += std::exp(logit[j] - mx);
        const double denom = sum + (x.sink.empty() ? 0.0 : std::exp(static_cast<double>(x.sink[h]) - mx));
        for (int64_t d = 0; d < Dv; ++d) {
          double acc = 0.0;
          for (int64_t j = 0; j < lk; ++j)
            if (logit[j] != -kInf) acc += std::exp(logit[j] - mx) * v(b, j, hk, d);
          put_out(b, i, h, d, acc / denom);
        }
        put_lse(b, i, h, mx + std::log(sum));
      }
    }
  }
};

void set_options(AttentionOptions& o, const Extras& x) {
  if (x.scale != 0.0f) o.scale = x.scale;
  o.softcap = x.softcap;
  o.alibi_slopes = x.alibi.empty() ? nullptr : x.alibi.data();
  o.sink_logits = x.sink.empty() ? nullptr : x.sink.data();
}

// Max |a - b| with -inf == -inf and any NaN a failure.
double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return kInf;
  double e = 0.0;
  for (size_t n = 0; n < a.size(); ++n) {
    if (std::isnan(a[n]) || std::isnan(b[n])) return kInf;
    if (std::isinf(a[n]) || std::isinf(b[n])) {
      if (a[n] != b[n]) return kInf;
      continue;
    }
    e = std::max(e, std::abs(a[n] - b[n]));
  }
  return e;
}

Extras random_extras(std::mt19937_64& rng, int64_t Hq, int which) {
  Extras x;
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  if (which & 1) x.scale = 0.05f + 0.5f * (u(rng) + 1.0f);
  if (which & 2) x.softcap = 0.3f + (u(rng) + 1.0f);
  if (which & 4)
    for (int64_t h = 0; h < Hq; ++h) x.alibi.push_back(std::pow(2.0f, -1.0f - static_cast<float>(h)));
  if (which & 8)
    for (int64_t h = 0; h < Hq; ++h) x.sink.push_back(2.0f * u(rng));
  return x;
}

// Masks as (attnkit functor, independent formula) pairs.
template <class Visit>
void for_each_rule(std::mt19937_64& rng, Visit&& visit) {
  const int64_t W = uniform(rng, 1, 5), P = uniform(rng, 0, 4);
  visit("full", FullMask{}, Rule([](int64_t, int64_t, int64_t, int64_t, int64_t) { return true; }));
  visit("causal", CausalMask{}, Rule([](int64_t, int64_t, int64_t, int64_t j, int64_t p) { return j <= p; }));
  visit("sliding_window", SlidingWindowMask(W),
        Rule([W](int64_t, int64_t, int64_t, int64_t j, int64_t p) { return j <= p && j > p - W; }));
  visit("prefix_lm | custom", PrefixLMMask(P) | custom_mask([](int64_t b, int64_t h, int64_t i, int64_t j) {
                                return (b + h + 2 * i + j) % 3 == 0;
                              }),
        Rule([P](int64_t b, int64_t h, int64_t i, int64_t j, int64_t p) {
          return j < P || j <= p || (b + h + 2 * i + j) % 3 == 0;
        }));
}

}  // namespace

TEST_CASE("reference: padded BSHD equals the scalar loop (GQA, lengths, alignments, options)", "[reference]") {
  const uint64_t seed = attnkit_test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t heads[][2] = {{1, 1}, {3, 3}, {6, 2}, {4, 1}, {8, 2}};
  for (int n = 0; n < 10; ++n) {
    const int64_t Hq = heads[n % 5][0], Hkv = heads[n % 5][1];
    const int64_t B = uniform(rng, 1, 3), Sq = uniform(rng, 1, 11), Sk = uniform(rng, 1, 13);
    const int64_t D = uniform(rng, 1, 9), Dv = uniform(rng, 1, 7);
    const bool top_left = n % 2;
    const Extras x = random_extras(rng, Hq, n);
    std::vector<int32_t> ql(B), kl(B);
    for (auto& l : ql) l = static_cast<int32_t>(uniform(rng, 0, Sq));
    for (auto& l : kl) l = static_cast<int32_t>(uniform(rng, 0, Sk));
    const bool with_lengths = n % 3 != 0;
    INFO("B " << B << " Sq " << Sq << " Sk " << Sk << " Hq " << Hq << " Hkv " << Hkv << " D " << D << " Dv " << Dv
              << " top_left " << top_left << " options " << n << " lengths " << with_lengths);

    const auto q = attnkit_test::random_vector<float>(B * Sq * Hq * D, rng, -2.0f, 2.0f);
    const auto k = attnkit_test::random_vector<float>(B * Sk * Hkv * D, rng, -2.0f, 2.0f);
    const auto v = attnkit_test::random_vector<float>(B * Sk * Hkv * Dv, rng);
    const Element qe = [&](int64_t b, int64_t i, int64_t h, int64_t d) { return q[((b * Sq + i) * Hq + h) * D + d]; };
    const Element ke = [&](int64_t b, int64_t j, int64_t h, int64_t d) { return k[((b * Sk + j) * Hkv + h) * D + d]; };
    const Element ve = [&](int64_t b, int64_t j, int64_t h, int64_t d) { return v[((b * Sk + j) * Hkv + h) * Dv + d]; };

    AttentionOptions o;
    o.alignment = top_left ? Alignment::TopLeft : Alignment::BottomRight;
    if (with_lengths) {
      o.q_lens = ql.data();
      o.kv_lens = kl.data();
    }
    set_options(o, x);
    const Scalar scalar{Hq, Hkv, D, Dv, top_left, x};

    for_each_rule(rng, [&](const char* name, const auto& mask, const Rule& rule) {
      INFO("mask " << name);
      std::vector<double> out(B * Sq * Hq * Dv, 0.0), lse(B * Hq * Sq, -kInf);
      for (int64_t b = 0; b < B; ++b)
        scalar.sequence(
            b, with_lengths ? ql[b] : Sq, with_lengths ? kl[b] : Sk, qe, ke, ve, rule,
            [&](int64_t bb, int64_t i, int64_t h, int64_t d, double y) { out[((bb * Sq + i) * Hq + h) * Dv + d] = y; },
            [&](int64_t bb, int64_t i, int64_t h, double y) { lse[(bb * Hq + h) * Sq + i] = y; });
      const auto r = reference_attention(Tensor4<const float>(q.data(), {B, Sq, Hq, D}),
                                         Tensor4<const float>(k.data(), {B, Sk, Hkv, D}),
                                         Tensor4<const float>(v.data(), {B, Sk, Hkv, Dv}), mask, o);
      CHECK(max_abs_diff(r.out, out) < 1e-12);
      CHECK(max_abs_diff(r.lse, lse) < 1e-12);
    });
  }
}

TEST_CASE("reference: strided views (BHSD buffers seen as BSHD) read the right elements", "[reference]") {
  const uint64_t seed = attnkit_test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t B = 2, Sq = 7, Sk = 9, Hq = 4, Hkv = 2, D = 5, Dv = 3;
  // q, k, v stored [B, H, S, D] with one element of padding per row.
  const int64_t Dp = D + 1, Dvp = Dv + 1;
  const auto q = attnkit_test::random_vector<float>(B * Hq * Sq * Dp, rng);
  const auto k = attnkit_test::random_vector<float>(B * Hkv * Sk * Dp, rng);
  const auto v = attnkit_test::random_vector<float>(B * Hkv * Sk * Dvp, rng);
  const Tensor4<const float> qv(q.data(), {B, Sq, Hq, D}, {Hq * Sq * Dp, Dp, Sq * Dp, 1});
  const Tensor4<const float> kv(k.data(), {B, Sk, Hkv, D}, {Hkv * Sk * Dp, Dp, Sk * Dp, 1});
  const Tensor4<const float> vv(v.data(), {B, Sk, Hkv, Dv}, {Hkv * Sk * Dvp, Dvp, Sk * Dvp, 1});
  const Element qe = [&](int64_t b, int64_t i, int64_t h, int64_t d) { return q[((b * Hq + h) * Sq + i) * Dp + d]; };
  const Element ke = [&](int64_t b, int64_t j, int64_t h, int64_t d) { return k[((b * Hkv + h) * Sk + j) * Dp + d]; };
  const Element ve = [&](int64_t b, int64_t j, int64_t h, int64_t d) { return v[((b * Hkv + h) * Sk + j) * Dvp + d]; };
  std::vector<double> out(B * Sq * Hq * Dv), lse(B * Hq * Sq);
  const Scalar scalar{Hq, Hkv, D, Dv, false, {}};
  for (int64_t b = 0; b < B; ++b)
    scalar.sequence(
        b, Sq, Sk, qe, ke, ve, [](int64_t, int64_t, int64_t, int64_t j, int64_t p) { return j <= p; },
        [&](int64_t bb, int64_t i, int64_t h, int64_t d, double y) { out[((bb * Sq + i) * Hq + h) * Dv + d] = y; },
        [&](int64_t bb, int64_t i, int64_t h, double y) { lse[(bb * Hq + h) * Sq + i] = y; });
  const auto r = reference_attention(qv, kv, vv, CausalMask{});
  CHECK(max_abs_diff(r.out, out) < 1e-12);
  CHECK(max_abs_diff(r.lse, lse) < 1e-12);
}

TEST_CASE("reference: varlen equals the scalar loop", "[reference]") {
  const uint64_t seed = attnkit_test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (int n = 0; n < 8; ++n) {
    const int64_t Hq = n % 2 ? 6 : 4, Hkv = n % 2 ? 3 : 1, D = uniform(rng, 1, 8), Dv = uniform(rng, 1, 8);
    const int64_t B = uniform(rng, 1, 4);
    const bool top_left = n % 4 >= 2;
    std::vector<int32_t> cq{0}, ck{0};
    for (int64_t b = 0; b < B; ++b) {
      cq.push_back(cq.back() + static_cast<int32_t>(uniform(rng, 0, 9)));
      ck.push_back(ck.back() + static_cast<int32_t>(uniform(rng, 0, 11)));
    }
    // Spare rows after the last sequence: untouched by any sequence.
    const int64_t Tq = cq.back() + uniform(rng, 0, 2), Tk = ck.back() + uniform(rng, 0, 2);
    const Extras x = random_extras(rng, Hq, 15 - n);
    INFO("B " << B << " total_q " << Tq << " total_k " << Tk << " Hq " << Hq << " Hkv " << Hkv << " D " << D
              << " top_left " << top_left);
    const auto q = attnkit_test::random_vector<float>(std::max<int64_t>(Tq, 1) * Hq * D, rng);
    const auto k = attnkit_test::random_vector<float>(std::max<int64_t>(Tk, 1) * Hkv * D, rng);
    const auto v = attnkit_test::random_vector<float>(std::max<int64_t>(Tk, 1) * Hkv * Dv, rng);
    const Element qe = [&](int64_t b, int64_t i, int64_t h, int64_t d) { return q[((cq[b] + i) * Hq + h) * D + d]; };
    const Element ke = [&](int64_t b, int64_t j, int64_t h, int64_t d) { return k[((ck[b] + j) * Hkv + h) * D + d]; };
    const Element ve = [&](int64_t b, int64_t j, int64_t h, int64_t d) { return v[((ck[b] + j) * Hkv + h) * Dv + d]; };
    VarlenSeqs seqs;
    seqs.cu_seqlens_q = cq.data();
    seqs.cu_seqlens_k = ck.data();
    seqs.batch = B;
    AttentionOptions o;
    o.alignment = top_left ? Alignment::TopLeft : Alignment::BottomRight;
    set_options(o, x);
    const Scalar scalar{Hq, Hkv, D, Dv, top_left, x};
    for_each_rule(rng, [&](const char* name, const auto& mask, const Rule& rule) {
      INFO("mask " << name);
      std::vector<double> out(Tq * Hq * Dv, 0.0), lse(Hq * Tq, -kInf);
      for (int64_t b = 0; b < B; ++b)
        scalar.sequence(
            b, cq[b + 1] - cq[b], ck[b + 1] - ck[b], qe, ke, ve, rule,
            [&](int64_t bb, int64_t i, int64_t h, int64_t d, double y) { out[((cq[bb] + i) * Hq + h) * Dv + d] = y; },
            [&](int64_t bb, int64_t i, int64_t h, double y) { lse[h * Tq + cq[bb] + i] = y; });
      const auto r = reference_attention_varlen(Tensor3<const float>(q.data(), {Tq, Hq, D}),
                                                Tensor3<const float>(k.data(), {Tk, Hkv, D}),
                                                Tensor3<const float>(v.data(), {Tk, Hkv, Dv}), seqs, mask, o);
      CHECK(max_abs_diff(r.out, out) < 1e-12);
      CHECK(max_abs_diff(r.lse, lse) < 1e-12);
    });
  }
}

TEST_CASE("reference: fully masked rows give out 0 and lse -inf, never NaN", "[reference]") {
  const uint64_t seed = attnkit_test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t B = 3, Sq = 6, Sk = 4, Hq = 2, Hkv = 1, D = 4;
  const auto q = attnkit_test::random_vector<float>(B * Sq * Hq * D, rng);
  const auto k = attnkit_test::random_vector<float>(B * Sk * Hkv * D, rng);
  const auto v = attnkit_test::random_vector<float>(B * Sk * Hkv * D, rng);
  const Tensor4<const float> qv(q.data(), {B, Sq, Hq, D}), kv(k.data(), {B, Sk, Hkv, D}), vv(v.data(), {B, Sk, Hkv, D});
  // Entry 0: 6 queries over 4 keys, bottom-right causal: rows 0 and 1 see no key.
  // Entry 1: 3 valid queries (rows 3..5 are padding). Entry 2: no valid key at all.
  const int32_t ql[3] = {6, 3, 5}, kl[3] = {4, 4, 0};
  const float sinks[2] = {0.5f, -1.0f};
  for (const bool with_sink : {false, true}) {
    AttentionOptions o;
    o.q_lens = ql;
    o.kv_lens = kl;
    o.sink_logits = with_sink ? sinks : nullptr;
    const auto r = reference_attention(qv, kv, vv, CausalMask{}, o);
    auto masked = [&](int64_t b, int64_t i) { return (b == 0 && i < 2) || (b == 1 && i >= 3) || b == 2; };
    int64_t masked_rows = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t i = 0; i < Sq; ++i) {
          INFO("b " << b << " h " << h << " i " << i << " sink " << with_sink);
          const double l = r.lse[(b * Hq + h) * Sq + i];
          REQUIRE(!std::isnan(l));
          if (masked(b, i)) {
            ++masked_rows;
            CHECK((std::isinf(l) && l < 0));
            for (int64_t d = 0; d < D; ++d) CHECK(r.out[((b * Sq + i) * Hq + h) * D + d] == 0.0);
          } else {
            CHECK(std::isfinite(l));
          }
        }
    CHECK(masked_rows == (2 + 3 + 6) * Hq);
    for (double y : r.out) CHECK(std::isfinite(y));
  }
}

TEST_CASE("reference: GQA maps query head h to kv head h / group (not h % Hkv)", "[reference]") {
  const uint64_t seed = attnkit_test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (const auto& hv : {std::pair<int64_t, int64_t>{8, 2}, {32, 8}, {6, 3}, {4, 1}}) {
    const int64_t Hq = hv.first, Hkv = hv.second, group = Hq / Hkv, B = 2, S = 5, D = 4;
    INFO("Hq " << Hq << " Hkv " << Hkv);
    const auto q = attnkit_test::random_vector<float>(B * S * Hq * D, rng);
    const auto k = attnkit_test::random_vector<float>(B * S * Hkv * D, rng);
    // Every value of kv head g is g + 1: the output of any query head is the
    // number of the kv head it read, whatever the softmax weights.
    std::vector<float> v(B * S * Hkv * D);
    for (int64_t n = 0; n < static_cast<int64_t>(v.size()); ++n) v[n] = static_cast<float>((n / D) % Hkv + 1);
    const auto r = reference_attention(Tensor4<const float>(q.data(), {B, S, Hq, D}),
                                       Tensor4<const float>(k.data(), {B, S, Hkv, D}),
                                       Tensor4<const float>(v.data(), {B, S, Hkv, D}), CausalMask{});
    int64_t bad = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < S; ++i)
        for (int64_t h = 0; h < Hq; ++h)
          for (int64_t d = 0; d < D; ++d)
            bad += std::abs(r.out[((b * S + i) * Hq + h) * D + d] - static_cast<double>(h / group + 1)) > 1e-12;
    CHECK(bad == 0);
  }
}

TEST_CASE("reference: LSE is the natural log of the softmax denominator", "[reference]") {
  // q = 0: every logit is 0, so lse = ln(number of allowed keys) and out is
  // the mean of the allowed values.
  const int64_t S = 7, D = 3;
  std::vector<float> q(S * D, 0.0f), k(S * D), v(S * D);
  for (int64_t n = 0; n < S * D; ++n) {
    k[n] = static_cast<float>(n % 5) - 2.0f;
    v[n] = static_cast<float>(n / D);  // value row j is all j
  }
  const auto r =
      reference_attention(Tensor4<const float>(q.data(), {1, S, 1, D}), Tensor4<const float>(k.data(), {1, S, 1, D}),
                          Tensor4<const float>(v.data(), {1, S, 1, D}), CausalMask{});
  for (int64_t i = 0; i < S; ++i) {
    CHECK(r.lse[i] == Approx(std::log(static_cast<double>(i + 1))).epsilon(1e-14).margin(1e-15));
    CHECK(r.out[i * D] == Approx(static_cast<double>(i) / 2.0).epsilon(1e-14).margin(1e-15));
  }
}
