// Fused RoPE attention (AttentionOptions::rope) against
//   (a) apply_rope on q and k, then attention without RoPE: the two paths must
//       agree within fp32 rounding;
//   (b) an fp64 reference written here that scores every (i, j) pair with q
//       rotated by the pair's (clipped) relative position r' and k unrotated:
//       <R(p) q, R(j) k> = <R(p - j) q, k>, so one reference covers plain RoPE,
//       every scaling, ReRoPE (r' = min(r, w)) and Leaky ReRoPE.
// The inverse frequencies come from rope::resolve (tested against the
// published formulas in test_rope.cpp); the rotation and the clipping here are
// the test's own double-precision code.
#include <attnkit/attention.hpp>
#include <attnkit/rope/rope.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "support/test_util.hpp"

using namespace attnkit;
using namespace attnkit_test;

namespace {

struct Shape {
  int64_t B = 1, Sq = 1, Sk = 1, Hq = 1, Hkv = 1, D = 64;
};

// Where the positions of one problem come from.
struct Positions {
  std::vector<int32_t> q_lens, kv_lens;  // empty = full
  std::vector<int64_t> q_pos, kv_pos;    // empty = alignment rule
  Alignment alignment = Alignment::BottomRight;
};

template <class T>
struct Problem {
  Shape s;
  Positions pos;
  std::vector<T> q, k, v;
  Problem(const Shape& sh, std::mt19937_64& rng) : s(sh) {
    q = random_vector<T>(static_cast<size_t>(s.B * s.Sq * s.Hq * s.D), rng);
    k = random_vector<T>(static_cast<size_t>(s.B * s.Sk * s.Hkv * s.D), rng);
    v = random_vector<T>(static_cast<size_t>(s.B * s.Sk * s.Hkv * s.D), rng);
  }
  int64_t lq(int64_t b) const { return pos.q_lens.empty() ? s.Sq : pos.q_lens[b]; }
  int64_t lk(int64_t b) const { return pos.kv_lens.empty() ? s.Sk : pos.kv_lens[b]; }
  int64_t q_position(int64_t b, int64_t i) const {
    if (!pos.q_pos.empty()) return pos.q_pos[b * s.Sq + i];
    return pos.alignment == Alignment::BottomRight ? i + lk(b) - lq(b) : i;
  }
  int64_t kv_position(int64_t b, int64_t j) const { return pos.kv_pos.empty() ? j : pos.kv_pos[b * s.Sk + j]; }
  AttentionOptions options() const {
    AttentionOptions o;
    o.alignment = pos.alignment;
    o.q_lens = pos.q_lens.empty() ? nullptr : pos.q_lens.data();
    o.kv_lens = pos.kv_lens.empty() ? nullptr : pos.kv_lens.data();
    o.q_positions = pos.q_pos.empty() ? nullptr : pos.q_pos.data();
    o.kv_positions = pos.kv_pos.empty() ? nullptr : pos.kv_pos.data();
    return o;
  }
  // Every position the kernel uses, as explicit [B, S] arrays (for apply_rope).
  std::vector<int64_t> all_q_positions() const {
    std::vector<int64_t> p(static_cast<size_t>(s.B * s.Sq), 0);
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t i = 0; i < lq(b); ++i) p[b * s.Sq + i] = q_position(b, i);
    return p;
  }
  std::vector<int64_t> all_kv_positions() const {
    std::vector<int64_t> p(static_cast<size_t>(s.B * s.Sk), 0);
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t j = 0; j < lk(b); ++j) p[b * s.Sk + j] = kv_position(b, j);
    return p;
  }
  int64_t seq_len() const {  // DynamicNTK: 1 + the largest position used
    int64_t m = 0;
    for (int64_t b = 0; b < s.B; ++b) {
      for (int64_t i = 0; i < lq(b); ++i) m = std::max(m, q_position(b, i) + 1);
      for (int64_t j = 0; j < lk(b); ++j) m = std::max(m, kv_position(b, j) + 1);
    }
    return m;
  }
  Tensor4<const T> Q() const { return Tensor4<const T>(q.data(), {s.B, s.Sq, s.Hq, s.D}); }
  Tensor4<const T> K() const { return Tensor4<const T>(k.data(), {s.B, s.Sk, s.Hkv, s.D}); }
  Tensor4<const T> V() const { return Tensor4<const T>(v.data(), {s.B, s.Sk, s.Hkv, s.D}); }
  size_t out_size() const { return static_cast<size_t>(s.B * s.Sq * s.Hq * s.D); }
};

// Rotate x (first R dims) by angle r' * inv_freq_i in double; the rotated dims
// are multiplied by `scale` (YaRN's temperature, squared: q's and k's).
void rotate_double(RopeStyle style, std::vector<double>& x, int R, const double* inv_freq, double r, double scale) {
  for (int i = 0; i < R / 2; ++i) {
    const int a = style == RopeStyle::Interleaved ? 2 * i : i;
    const int b = style == RopeStyle::Interleaved ? 2 * i + 1 : i + R / 2;
    const double c = std::cos(r * inv_freq[i]) * scale, s = std::sin(r * inv_freq[i]) * scale;
    const double x0 = x[a], x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
  }
}

// The clipped relative position, from the definitions (DESIGN §4).
double clip(const RopeConfig& cfg, double r) {
  if (cfg.relative == RopeRelative::None || r <= cfg.window) return r;
  if (cfg.relative == RopeRelative::ReRoPE) return cfg.window;
  return cfg.window + (r - cfg.window) / cfg.leaky_k;
}

// fp64 attention where the (i, j) score is <R(r') q_i, k_j> * scale.
template <class T, class Mask>
std::vector<double> reference_rope_attention(const Problem<T>& pr, const RopeConfig& cfg, const Mask& mask) {
  const Shape& s = pr.s;
  const rope::RopeParams p = rope::resolve(cfg, s.D, pr.seq_len());
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.D));
  const double temp2 = static_cast<double>(p.attention_scaling) * p.attention_scaling;
  std::vector<double> out(pr.out_size(), 0.0);
  const int64_t group = s.Hq / s.Hkv;
  for (int64_t b = 0; b < s.B; ++b) {
    const int64_t lq = pr.lq(b), lk = pr.lk(b);
    for (int64_t h = 0; h < s.Hq; ++h) {
      const SeqCtx ctx = SeqCtx::make(b, h, lq, lk, pr.pos.alignment);
      const int64_t hk = h / group;
      for (int64_t i = 0; i < lq; ++i) {
        std::vector<double> q0(static_cast<size_t>(s.D));
        for (int64_t d = 0; d < s.D; ++d) q0[d] = to_float(pr.q[((b * s.Sq + i) * s.Hq + h) * s.D + d]);
        std::vector<double> logits(static_cast<size_t>(lk), -std::numeric_limits<double>::infinity());
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < lk; ++j) {
          if (!mask(ctx, i, j)) continue;
          const double r = static_cast<double>(pr.q_position(b, i) - pr.kv_position(b, j));
          std::vector<double> qr = q0;
          rotate_double(cfg.style, qr, p.rotary_dim, p.inv_freq, clip(cfg, r), temp2);
          double dot = 0;
          for (int64_t d = 0; d < s.D; ++d) dot += qr[d] * to_float(pr.k[((b * s.Sk + j) * s.Hkv + hk) * s.D + d]);
          logits[j] = dot * scale;
          mx = std::max(mx, logits[j]);
        }
        if (mx == -std::numeric_limits<double>::infinity()) continue;
        double sum = 0;
        for (double& l : logits) sum += (l = std::exp(l - mx));
        double* o = &out[((b * s.Sq + i) * s.Hq + h) * s.D];
        for (int64_t j = 0; j < lk; ++j)
          for (int64_t d = 0; d < s.D; ++d)
            o[d] += logits[j] / sum * to_float(pr.v[((b * s.Sk + j) * s.Hkv + hk) * s.D + d]);
      }
    }
  }
  return out;
}

template <class T, class Mask>
std::vector<T> fused(const Problem<T>& pr, const RopeConfig& cfg, const Mask& mask, int threads = 0) {
  std::vector<T> out(pr.out_size(), from_float<T>(std::numeric_limits<float>::quiet_NaN()));
  AttentionOptions o = pr.options();
  o.rope = &cfg;
  o.num_threads = threads;
  attention(pr.Q(), pr.K(), pr.V(), Tensor4<T>(out.data(), {pr.s.B, pr.s.Sq, pr.s.Hq, pr.s.D}), mask, o);
  return out;
}

// apply_rope on copies of q and k at the positions the kernel would use, then
// attention without RoPE.
template <class T, class Mask>
std::vector<T> separate(const Problem<T>& pr, const RopeConfig& cfg, const Mask& mask) {
  std::vector<T> q = pr.q, k = pr.k, out(pr.out_size(), from_float<T>(0.0f));
  const std::vector<int64_t> qp = pr.all_q_positions(), kp = pr.all_kv_positions();
  ApplyRopeOptions ro;
  ro.seq_len = pr.seq_len();
  ro.positions = qp.data();
  apply_rope(Tensor4<T>(q.data(), {pr.s.B, pr.s.Sq, pr.s.Hq, pr.s.D}), cfg, ro);
  ro.positions = kp.data();
  apply_rope(Tensor4<T>(k.data(), {pr.s.B, pr.s.Sk, pr.s.Hkv, pr.s.D}), cfg, ro);
  attention(Tensor4<const T>(q.data(), {pr.s.B, pr.s.Sq, pr.s.Hq, pr.s.D}),
            Tensor4<const T>(k.data(), {pr.s.B, pr.s.Sk, pr.s.Hkv, pr.s.D}), pr.V(),
            Tensor4<T>(out.data(), {pr.s.B, pr.s.Sq, pr.s.Hq, pr.s.D}), mask, pr.options());
  return out;
}

std::vector<double> widen(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

const RopeConfig* all_scalings(RopeStyle st, int64_t R, size_t* n) {
  static std::vector<RopeConfig> v;
  v = {RopeConfig::standard(st, 10000, R),
       RopeConfig::standard(st, 500000, R),
       RopeConfig::linear(st, 4, 10000, R),
       RopeConfig::ntk(st, 8, 10000, R),
       RopeConfig::dynamic_ntk(st, 4, 32, 10000, R),  // T = 32 < the lengths used: the base really changes
       RopeConfig::yarn(st, 8, 64, 10000, 32, 1, 0, R),
       RopeConfig::llama3_1(st, 8, 1, 4, 256, 500000, R)};
  *n = v.size();
  return v.data();
}

std::string describe(const RopeConfig& c) {
  return std::string(to_string(c.style)) + " scaling=" + to_string(c.scaling) + " relative=" + to_string(c.relative) +
         " R=" + std::to_string(c.rotary_dim);
}

}  // namespace

TEST_CASE("fused RoPE: equals apply_rope then attention, every scaling, fp32", "[rope][fused]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  struct Case {
    Shape s;
    int64_t R;
    const char* what;
  };
  const Case cases[] = {
      {{2, 37, 37, 4, 2, 64}, 0, "prefill GQA-2 D=64"},
      {{1, 1, 700, 8, 2, 128}, 0, "decode Sq=1 Sk=700 GQA-4 D=128"},
      {{2, 20, 53, 4, 4, 80}, 32, "KV cache Sq=20 Sk=53, D=80 partial R=32"},
      {{1, 70, 70, 2, 1, 128}, 64, "MQA, partial R=64"},
  };
  for (const Case& c : cases) {
    for (RopeStyle st : {RopeStyle::Interleaved, RopeStyle::Half}) {
      size_t n = 0;
      const RopeConfig* cfgs = all_scalings(st, c.R, &n);
      for (size_t m = 0; m < n; ++m) {
        INFO(c.what << " " << describe(cfgs[m]));
        Problem<float> pr(c.s, rng);
        const std::vector<float> a = fused(pr, cfgs[m], CausalMask{});
        const std::vector<float> b = separate(pr, cfgs[m], CausalMask{});
        const std::vector<double> ref = reference_rope_attention(pr, cfgs[m], CausalMask{});
        REQUIRE(all_finite(a));
        CHECK(rel_l2(a, widen(b)) <= 1e-5);
        CHECK(rel_l2(a, ref) <= 1e-5);
        CHECK(rel_l2(b, ref) <= 1e-5);  // the comparison path itself is right
      }
    }
  }
}

TEST_CASE("fused RoPE: explicit positions, per-batch lengths, alignments", "[rope][fused]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const Shape sh{3, 24, 40, 4, 2, 64};
  for (RopeStyle st : {RopeStyle::Interleaved, RopeStyle::Half}) {
    for (int variant = 0; variant < 4; ++variant) {
      Problem<float> pr(sh, rng);
      std::string what;
      if (variant == 0) {
        what = "per-batch lengths, bottom-right";
        pr.pos.q_lens = {24, 5, 17};
        pr.pos.kv_lens = {40, 31, 17};
      } else if (variant == 1) {
        what = "top-left alignment";
        pr.pos.alignment = Alignment::TopLeft;
        pr.pos.q_lens = {24, 1, 20};
        pr.pos.kv_lens = {40, 33, 24};
      } else {
        // Left padding / long offsets: explicit positions (variant 3 near 2^20).
        what = variant == 2 ? "explicit positions (left padding)" : "explicit positions near 2^20";
        const int64_t base = variant == 2 ? 0 : (int64_t(1) << 20);
        pr.pos.q_pos.resize(static_cast<size_t>(sh.B * sh.Sq));
        pr.pos.kv_pos.resize(static_cast<size_t>(sh.B * sh.Sk));
        for (int64_t b = 0; b < sh.B; ++b) {
          const int64_t pad = 3 * b;  // b's first `pad` keys are padding: positions start later
          for (int64_t j = 0; j < sh.Sk; ++j) pr.pos.kv_pos[b * sh.Sk + j] = base + std::max<int64_t>(0, j - pad);
          for (int64_t i = 0; i < sh.Sq; ++i)
            pr.pos.q_pos[b * sh.Sq + i] = base + std::max<int64_t>(0, i + sh.Sk - sh.Sq - pad);
        }
      }
      for (const RopeConfig& cfg :
           {RopeConfig::standard(st), RopeConfig::yarn(st, 4, 16), RopeConfig::dynamic_ntk(st, 2, 16)}) {
        INFO(what << " " << describe(cfg));
        const std::vector<float> a = fused(pr, cfg, CausalMask{});
        const std::vector<float> b = separate(pr, cfg, CausalMask{});
        const std::vector<double> ref = reference_rope_attention(pr, cfg, CausalMask{});
        REQUIRE(all_finite(a));
        CHECK(rel_l2(a, widen(b)) <= 1e-5);
        CHECK(rel_l2(a, ref) <= 1e-5);
      }
    }
  }
}

TEST_CASE("fused RoPE: varlen equals apply_rope_varlen then attention_varlen", "[rope][fused]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const std::vector<int32_t> cu_q = {0, 3, 4, 20}, cu_k = {0, 9, 30, 46};  // q lens 3, 1, 16; k lens 9, 21, 16
  const int64_t Hq = 4, Hkv = 2, D = 64, tq = 20, tk = 46;
  VarlenSeqs seqs;
  seqs.cu_seqlens_q = cu_q.data();
  seqs.cu_seqlens_k = cu_k.data();
  seqs.batch = 3;
  for (RopeStyle st : {RopeStyle::Interleaved, RopeStyle::Half}) {
    const RopeConfig cfg = RopeConfig::llama3_1(st, 8, 1, 4, 32);
    INFO(describe(cfg));
    const std::vector<float> q = random_vector<float>(static_cast<size_t>(tq * Hq * D), rng);
    const std::vector<float> k = random_vector<float>(static_cast<size_t>(tk * Hkv * D), rng);
    const std::vector<float> v = random_vector<float>(static_cast<size_t>(tk * Hkv * D), rng);
    std::vector<float> a(static_cast<size_t>(tq * Hq * D)), b(a.size());
    AttentionOptions o;
    o.rope = &cfg;
    attention_varlen(Tensor3<const float>(q.data(), {tq, Hq, D}), Tensor3<const float>(k.data(), {tk, Hkv, D}),
                     Tensor3<const float>(v.data(), {tk, Hkv, D}), Tensor3<float>(a.data(), {tq, Hq, D}), seqs,
                     CausalMask{}, o);
    // Separate: positions of query row i of sequence b are i + Lk - Lq (bottom-right).
    std::vector<float> qr = q, kr = k;
    std::vector<int64_t> qpos(static_cast<size_t>(tq));
    for (int b2 = 0; b2 < 3; ++b2)
      for (int32_t r = cu_q[b2]; r < cu_q[b2 + 1]; ++r)
        qpos[r] = (r - cu_q[b2]) + (cu_k[b2 + 1] - cu_k[b2]) - (cu_q[b2 + 1] - cu_q[b2]);
    ApplyRopeOptions ro;
    ro.seq_len = 21;
    ro.positions = qpos.data();
    apply_rope_varlen(Tensor3<float>(qr.data(), {tq, Hq, D}), cu_q.data(), 3, cfg, ro);
    ro.positions = nullptr;
    apply_rope_varlen(Tensor3<float>(kr.data(), {tk, Hkv, D}), cu_k.data(), 3, cfg, ro);
    attention_varlen(Tensor3<const float>(qr.data(), {tq, Hq, D}), Tensor3<const float>(kr.data(), {tk, Hkv, D}),
                     Tensor3<const float>(v.data(), {tk, Hkv, D}), Tensor3<float>(b.data(), {tq, Hq, D}), seqs,
                     CausalMask{});
    REQUIRE(all_finite(a));
    CHECK(rel_l2(a, widen(b)) <= 1e-5);
  }
}

TEST_CASE("fused RoPE: f16 and bf16 no worse than rotating in storage precision first", "[rope][fused]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const Shape sh{2, 33, 33, 8, 2, 128};
  auto run = [&](auto tag) {
    using T = decltype(tag);
    for (RopeStyle st : {RopeStyle::Interleaved, RopeStyle::Half}) {
      const RopeConfig cfg = RopeConfig::yarn(st, 4, 16);
      INFO(dtype_of<T>::name << " " << describe(cfg));
      Problem<T> pr(sh, rng);
      const std::vector<double> ref = reference_rope_attention(pr, cfg, CausalMask{});
      const double err_fused = rel_l2(fused(pr, cfg, CausalMask{}), ref);
      const double err_separate = rel_l2(separate(pr, cfg, CausalMask{}), ref);
      INFO("fused " << err_fused << " separate " << err_separate);
      CHECK(err_fused <= 2.0 * err_separate + 1e-6);
      CHECK(err_fused > 0.0);
    }
  };
  run(half{});
  run(bfloat16{});
}

TEST_CASE("fused RoPE: interleaved and half give the same attention after permuting q/k dims", "[rope][fused]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (int64_t R : {int64_t(0), int64_t(32)}) {
    const Shape sh{2, 29, 29, 4, 2, 64};
    const int64_t rd = R == 0 ? sh.D : R;
    Problem<float> pr(sh, rng);
    // Half layout of a checkpoint whose interleaved dim 2i is half dim i and 2i+1 is i + R/2.
    Problem<float> ph = pr;
    auto permute = [&](std::vector<float>& x, int64_t rows) {
      for (int64_t r = 0; r < rows; ++r) {
        float* row = &x[r * sh.D];
        std::vector<float> tmp(row, row + rd);
        for (int64_t i = 0; i < rd / 2; ++i) row[i] = tmp[2 * i], row[i + rd / 2] = tmp[2 * i + 1];
      }
    };
    permute(ph.q, sh.B * sh.Sq * sh.Hq);
    permute(ph.k, sh.B * sh.Sk * sh.Hkv);
    const RopeConfig ci = RopeConfig::llama3_1(RopeStyle::Interleaved, 8, 1, 4, 16).with_rotary_dim(R);
    const RopeConfig chalf = RopeConfig::llama3_1(RopeStyle::Half, 8, 1, 4, 16).with_rotary_dim(R);
    const std::vector<float> a = fused(pr, ci, CausalMask{});
    const std::vector<float> b = fused(ph, chalf, CausalMask{});
    INFO("R " << R);
    CHECK(rel_l2(a, widen(b)) <= 1e-6);
    // Mixing them up is not silent in this test: the unpermuted checkpoint with
    // the wrong style gives a clearly different output.
    const std::vector<float> wrong = fused(pr, chalf, CausalMask{});
    CHECK(rel_l2(wrong, widen(a)) > 1e-2);
  }
}

TEST_CASE("fused ReRoPE and Leaky ReRoPE vs the clipped-relative-position reference", "[rope][fused][rerope]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  struct Case {
    Shape s;
    double w, k;
    const char* what;
  };
  const Case cases[] = {
      {{2, 48, 48, 4, 2, 64}, 8, 4, "prefill, window 8"},
      {{1, 1, 300, 8, 2, 128}, 37, 3, "decode Sq=1 Sk=300"},
      {{2, 16, 90, 4, 1, 64}, 20, 2.5, "KV cache Sq=16 Sk=90, MQA"},
      {{1, 40, 40, 2, 2, 64}, 0, 8, "window 0"},
  };
  for (const Case& c : cases) {
    for (RopeStyle st : {RopeStyle::Interleaved, RopeStyle::Half}) {
      const RopeConfig cfgs[] = {
          RopeConfig::rerope(st, c.w),
          RopeConfig::leaky_rerope(st, c.w, c.k),
          RopeConfig::leaky_rerope(st, c.w, c.k, 10000, 32),                     // partial rotary
          RopeConfig::yarn(st, 4, 16).with_relative(RopeRelative::ReRoPE, c.w),  // + temperature
          RopeConfig::llama3_1(st, 8, 1, 4, 32).with_relative(RopeRelative::LeakyReRoPE, c.w, c.k),
      };
      for (const RopeConfig& cfg : cfgs) {
        INFO(c.what << " " << describe(cfg) << " w " << cfg.window << " k " << cfg.leaky_k);
        Problem<float> pr(c.s, rng);
        const std::vector<float> a = fused(pr, cfg, CausalMask{});
        const std::vector<double> ref = reference_rope_attention(pr, cfg, CausalMask{});
        REQUIRE(all_finite(a));
        CHECK(rel_l2(a, ref) <= 1e-5);
        // The clipping matters here: plain RoPE's reference is far away.
        RopeConfig plain = cfg;
        plain.relative = RopeRelative::None;
        CHECK(rel_l2(a, reference_rope_attention(pr, plain, CausalMask{})) > 1e-3);
      }
    }
  }
}

TEST_CASE("fused RoPE: thread-count invariant; relative modes reject non-causal masks", "[rope][fused]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  Problem<float> pr({2, 65, 65, 4, 2, 64}, rng);
  for (const RopeConfig& cfg :
       {RopeConfig::yarn(RopeStyle::Half, 4, 16), RopeConfig::leaky_rerope(RopeStyle::Half, 9, 3)}) {
    INFO(describe(cfg));
    const std::vector<float> a = fused(pr, cfg, CausalMask{}, 1);
    const std::vector<float> b = fused(pr, cfg, CausalMask{}, 2);
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  }
  std::vector<float> out(pr.out_size(), 7.0f);
  const std::vector<float> before = out;
  for (const RopeConfig& cfg :
       {RopeConfig::rerope(RopeStyle::Half, 16), RopeConfig::leaky_rerope(RopeStyle::Interleaved, 16, 4)}) {
    AttentionOptions o;
    o.rope = &cfg;
    CHECK_THROWS_AS(attention(pr.Q(), pr.K(), pr.V(), Tensor4<float>(out.data(), {2, 65, 4, 64}), FullMask{}, o),
                    attnkit::Error);
  }
  CHECK(out == before);
  // A plain RoPE config is fine with any mask.
  const RopeConfig plain = RopeConfig::standard(RopeStyle::Half);
  AttentionOptions o;
  o.rope = &plain;
  CHECK_NOTHROW(attention(pr.Q(), pr.K(), pr.V(), Tensor4<float>(out.data(), {2, 65, 4, 64}), FullMask{}, o));
}
