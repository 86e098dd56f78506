// CPU fused attention against the fp64 reference: every mask and
// composition, both alignments (split from test_cpu_kernel.cpp so CI
// compiles the two on both cores).
#include <attnkit/attention.hpp>
#include <string>
#include <vector>

#include "support/cpu_check.hpp"
#include "support/test_util.hpp"

using namespace attnkit;
using namespace attnkit_test;

TEST_CASE("CPU kernel: every mask and compositions, fp32", "[cpu][masks]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const Shape shapes[] = {{1, 65, 65, 4, 1, 64, 64}, {2, 100, 257, 8, 2, 128, 128}, {1, 257, 300, 6, 3, 80, 80}};
  for (const Shape& sh : shapes) {
    Problem<float> pr(sh, rng);
    std::vector<int32_t> docs(static_cast<size_t>(sh.B * sh.Sk));
    for (int64_t b = 0; b < sh.B; ++b)
      for (int64_t j = 0; j < sh.Sk; ++j) docs[b * sh.Sk + j] = static_cast<int32_t>((j * 4) / sh.Sk + (j > 7 ? 1 : 0));
    const int64_t nbq = (sh.Sq + 15) / 16, nbk = (sh.Sk + 31) / 32;
    std::vector<uint8_t> map(static_cast<size_t>(nbq * nbk));
    for (auto& m : map) m = (rng() % 3) != 0;
    const DocumentMask doc(docs.data(), sh.Sk);
    const BlockSparseMask bs(map.data(), 16, 32, nbq, nbk);
    AttentionOptions o;
    o.num_threads = 2;
    for (Alignment a : {Alignment::BottomRight, Alignment::TopLeft}) {
      o.alignment = a;
      const std::string al = a == Alignment::BottomRight ? " BR" : " TL";
      check_against_reference(pr, FullMask{}, o, "full" + al);
      check_against_reference(pr, CausalMask{}, o, "causal" + al);
      check_against_reference(pr, SlidingWindowMask(1), o, "window 1" + al);
      check_against_reference(pr, SlidingWindowMask(37), o, "window 37" + al);
      check_against_reference(pr, LocalMask(5, 9), o, "local(5,9)" + al);
      check_against_reference(pr, PrefixLMMask(13), o, "prefix 13" + al);
      check_against_reference(pr, doc & CausalMask{}, o, "document & causal" + al);
      check_against_reference(pr, SinkWindowMask(4, 20), o, "sink window" + al);
      check_against_reference(pr, bs, o, "block sparse" + al);
      check_against_reference(pr, bs & CausalMask{}, o, "block sparse & causal" + al);
      check_against_reference(pr, SlidingWindowMask(50) | PrefixLMMask(3), o, "window | prefix" + al);
      check_against_reference(pr, ~CausalMask{}, o, "not causal" + al);
      check_against_reference(pr, untiled(CausalMask{}), o, "untiled causal" + al);
      const auto odd = custom_mask([](int64_t b, int64_t h, int64_t i, int64_t j) { return (i + j + b + h) % 3 != 0; });
      check_against_reference(pr, odd, o, "custom" + al);
      const auto dense =
          dense_mask_additive(CausalMask{} & SlidingWindowMask(30), sh.B, sh.Sq, sh.Sk, nullptr, nullptr, a);
      check_against_reference(pr, AdditiveMask(dense.data(), sh.Sk, sh.Sq * sh.Sk), o, "dense additive" + al);
    }
  }
}
