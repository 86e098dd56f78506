// Extending a model trained on T = 4096 tokens to T' = 32768 (factor 8), five
// ways: position interpolation (PI), NTK-aware base scaling, YaRN, ReRoPE and
// Leaky ReRoPE. For one query and one fixed key (the key is a copy of the
// query: the all-ones direction, RoPE's classic "long-term decay" probe) the
// table prints the attention logit q.k / sqrt(D) as the key moves away.
//
// What to look for: plain RoPE is only trained up to distance 4095; beyond it
// the logit oscillates through values the model never saw. PI squeezes every
// distance by 8 (local resolution lost); NTK and YaRN keep the fast pairs and
// stretch the slow ones; ReRoPE holds every distance > w at exactly w; Leaky
// ReRoPE continues slowly so that 32767 lands at the trained 4095.
//
// The logit tables use attnkit's relative-branch helpers exactly as the fused
// attention kernels do (the (q, k) rotation positions for the pair (p, j)); the
// last table runs attnkit::attention with AttentionOptions::rope.
// GCC 12 false positive (bug 105593) inside the AVX-512 intrinsic headers once
// the CPU kernel is inlined; silenced for these system headers only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <xsimd/xsimd.hpp>
#pragma GCC diagnostic pop

#include <attnkit/attention.hpp>
#include <attnkit/rope/rope.hpp>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace {

using namespace attnkit;

constexpr int kHeadDim = 128;
constexpr int64_t kTrained = 4096;
constexpr int64_t kTarget = 32768;

// Logit q.k / sqrt(D) of a query at position p against a key at position j,
// with q = k = the all-ones vector (so sqrt(D) = 11.31 at distance 0, times
// YaRN's temperature squared), rotated as the config says.
double logit(const rope::RopeParams& p, int64_t q_pos, int64_t k_pos) {
  std::vector<float> q(kHeadDim, 1.0f), k = q;
  const rope::RotationPositions r = rope::rotation_positions(p, q_pos, k_pos);
  rope::rotate_row(p, q.data(), r.q);
  rope::rotate_row(p, k.data(), r.k);
  double dot = 0;
  for (int d = 0; d < kHeadDim; ++d) dot += static_cast<double>(q[d]) * k[d];
  return dot / std::sqrt(static_cast<double>(kHeadDim));
}

// The attention weight a query at position r puts on the fixed key at
// position 0 when positions 1..r hold background keys, through
// attnkit::attention with the RoPE fused in (the only way ReRoPE can run).
// V is e_0 for the fixed key and 0 for the others, so out[0] is the weight.
class FixedKeyProbe {
 public:
  FixedKeyProbe() : k_(static_cast<size_t>(kTarget) * kHeadDim), v_(k_.size(), 0.0f), q_(kHeadDim, 1.0f) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (float& x : k_) x = u(rng);
    for (int d = 0; d < kHeadDim; ++d) k_[d] = 1.0f;  // the fixed key = the query (all ones)
    v_[0] = 1.0f;
  }
  double weight(const RopeConfig& cfg, int64_t r) const {
    const int64_t sk = r + 1;
    float out[kHeadDim];
    AttentionOptions o;
    o.rope = &cfg;
    attention(Tensor4<const float>(q_.data(), {1, 1, 1, kHeadDim}),
              Tensor4<const float>(k_.data(), {1, sk, 1, kHeadDim}),
              Tensor4<const float>(v_.data(), {1, sk, 1, kHeadDim}), Tensor4<float>(out, {1, 1, 1, kHeadDim}),
              CausalMask{}, o);
    return out[0];
  }

 private:
  std::vector<float> k_, v_, q_;
};

}  // namespace

int main() {
  const double factor = static_cast<double>(kTarget) / kTrained;  // 8
  const double w = 512;                                           // ReRoPE window (Su uses 512)
  const double k = RopeConfig::leaky_k_for_context(w, kTrained, kTarget);
  const RopeStyle style = RopeStyle::Half;  // any style: the logits do not depend on it

  struct Method {
    const char* name;
    RopeConfig cfg;
  };
  const Method methods[] = {
      {"RoPE", RopeConfig::standard(style)},      {"PI x8", RopeConfig::linear(style, factor)},
      {"NTK x8", RopeConfig::ntk(style, factor)}, {"YaRN x8", RopeConfig::yarn(style, factor, kTrained)},
      {"ReRoPE", RopeConfig::rerope(style, w)},   {"LeakyReRoPE", RopeConfig::leaky_rerope(style, w, k)},
  };

  std::printf("Trained context T = %lld, target T' = %lld, head dim %d, base 10000.\n",
              static_cast<long long>(kTrained), static_cast<long long>(kTarget), kHeadDim);
  std::printf("ReRoPE window w = %.0f; Leaky ReRoPE k = (T' - w) / (T - w) = %.3f.\n", w, k);
  std::printf("YaRN temperature (multiplies rotated q and k): %.4f.\n\n",
              rope::resolve(methods[3].cfg, kHeadDim).attention_scaling);

  std::printf("Logit q.k / sqrt(D) of a query against one fixed key (q = k = all ones)\n");
  std::printf("as the distance r = p - j grows. Query at p = 32767, key at j = p - r.\n\n");
  std::printf("%8s", "r");
  for (const auto& m : methods) std::printf(" %12s", m.name);
  std::printf("\n");
  const int64_t p = kTarget - 1;
  for (int64_t r : {0, 1, 4, 16, 64, 256, 512, 1024, 2048, 4095, 4096, 8192, 16384, 24576, 32767}) {
    std::printf("%8lld", static_cast<long long>(r));
    for (const auto& m : methods) std::printf(" %12.4f", logit(rope::resolve(m.cfg, kHeadDim, kTarget), p, p - r));
    std::printf("%s\n", r >= kTrained ? "   <- beyond the trained context" : "");
  }

  std::printf("\nEffective relative position r' each method presents to pair 0 (the fastest) and\n");
  std::printf("pair 63 (the slowest), in units of that pair's trained angle per token:\n");
  std::printf("%8s", "r");
  for (const auto& m : methods) std::printf(" %12s", m.name);
  std::printf("\n");
  const rope::RopeParams plain = rope::resolve(methods[0].cfg, kHeadDim);
  for (int pair : {0, 63}) {
    std::printf("pair %d\n", pair);
    for (int64_t r : {16, 4095, 32767}) {
      std::printf("%8lld", static_cast<long long>(r));
      for (const auto& m : methods) {
        const rope::RopeParams prm = rope::resolve(m.cfg, kHeadDim, kTarget);
        const rope::RotationPositions rp = rope::rotation_positions(prm, p, p - r);
        const double angle = (rp.q - rp.k) * prm.inv_freq[pair];
        std::printf(" %12.1f", angle / plain.inv_freq[pair]);
      }
      std::printf("\n");
    }
  }
  std::printf("\nA value above %lld in the slow pair is a rotation the model never saw in training.\n",
              static_cast<long long>(kTrained - 1));

  std::printf("\nattnkit::attention with the RoPE fused in: weight (%%) of the fixed key at position 0\n");
  std::printf("for a query at position r, with r random background keys in between (q = fixed key).\n");
  std::printf("%8s", "r");
  for (const auto& m : methods) std::printf(" %12s", m.name);
  std::printf("\n");
  const FixedKeyProbe probe;
  for (int64_t r : {0, 16, 256, 1024, 4095, 8192, 16384, 32767}) {
    std::printf("%8lld", static_cast<long long>(r));
    for (const auto& m : methods) std::printf(" %12.4f", 100.0 * probe.weight(m.cfg, r));
    std::printf("%s\n", r >= kTrained ? "   <- beyond the trained context" : "");
  }
  return 0;
}
