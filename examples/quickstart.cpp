// attnkit quick start: every mask on a small Llama-shaped problem (4 query
// heads sharing 1 KV head, head dim 16, 8 tokens), printed as a 0/1 grid
// (row = query, column = key), then attention under that mask computed by the
// fp64 reference and by attnkit::attention, with their largest difference.
//
// GCC 12 reports a false -Wmaybe-uninitialized inside its own AVX-512
// intrinsics when the reference's Eigen products are inlined (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <attnkit/attnkit.hpp>
#include <attnkit/reference/reference.hpp>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#if __has_include(<attnkit/cpu/forward.hpp>)
#include <attnkit/attention.hpp>
#define QUICKSTART_HAS_KERNELS 1
#else
#define QUICKSTART_HAS_KERNELS 0
#endif

namespace {

constexpr int64_t kBatch = 1, kTokens = 8, kQHeads = 4, kKVHeads = 1, kHeadDim = 16;

// q [1, 8, 4, 16], k and v [1, 8, 1, 16], BSHD like FlashAttention.
struct Problem {
  std::vector<float> q, k, v;
  explicit Problem(uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> n(0.0f, 1.0f);
    auto fill = [&](std::vector<float>& x, int64_t heads) {
      x.resize(static_cast<size_t>(kBatch * kTokens * heads * kHeadDim));
      for (float& e : x) e = n(rng);
    };
    fill(q, kQHeads);
    fill(k, kKVHeads);
    fill(v, kKVHeads);
  }
  attnkit::Tensor4<const float> q_view() const { return {q.data(), {kBatch, kTokens, kQHeads, kHeadDim}}; }
  attnkit::Tensor4<const float> k_view() const { return {k.data(), {kBatch, kTokens, kKVHeads, kHeadDim}}; }
  attnkit::Tensor4<const float> v_view() const { return {v.data(), {kBatch, kTokens, kKVHeads, kHeadDim}}; }
};

int shown = 0, failed = 0;

template <class Mask>
void show(const char* name, const char* rule, const Mask& mask, const Problem& p,
          const attnkit::AttentionOptions& opts = {}) {
  std::printf("\n%s   allowed(i, j) = %s\n", name, rule);
  const int32_t* ql = opts.q_lens;
  const int32_t* kl = opts.kv_lens;
  const std::vector<uint8_t> grid = attnkit::dense_mask_bool(mask, 1, kTokens, kTokens, ql, kl, opts.alignment);
  for (int64_t i = 0; i < kTokens; ++i) {
    std::printf("  ");
    for (int64_t j = 0; j < kTokens; ++j) std::printf("%d ", grid[static_cast<size_t>(i * kTokens + j)]);
    std::printf("\n");
  }

  const attnkit::ReferenceOutput ref = attnkit::reference_attention(p.q_view(), p.k_view(), p.v_view(), mask, opts);
#if QUICKSTART_HAS_KERNELS
  std::vector<float> out(static_cast<size_t>(kBatch * kTokens * kQHeads * kHeadDim));
  std::vector<float> lse(static_cast<size_t>(kBatch * kQHeads * kTokens));
  attnkit::AttentionOptions o = opts;
  o.lse = lse.data();
  attnkit::attention(p.q_view(), p.k_view(), p.v_view(),
                     attnkit::Tensor4<float>(out.data(), {kBatch, kTokens, kQHeads, kHeadDim}), mask, o);
  double out_err = 0.0, lse_err = 0.0;
  for (size_t n = 0; n < out.size(); ++n) out_err = std::max(out_err, std::abs(out[n] - ref.out[n]));
  for (size_t n = 0; n < lse.size(); ++n) {
    if (std::isinf(ref.lse[n]))
      lse_err = std::max(lse_err, std::isinf(lse[n]) && lse[n] < 0 ? 0.0 : HUGE_VAL);
    else
      lse_err = std::max(lse_err, std::abs(lse[n] - ref.lse[n]));
  }
  const bool ok = out_err < 1e-4 && lse_err < 1e-4;
  failed += !ok;
  std::printf("  attnkit::attention vs fp64 reference: max |out diff| = %.2e, max |lse diff| = %.2e  %s\n", out_err,
              lse_err, ok ? "ok" : "MISMATCH");
#else
  double norm = 0.0;
  for (double x : ref.out) norm = std::max(norm, std::abs(x));
  std::printf("  fp64 reference: max |out| = %.4f (CPU kernels not built in this checkout)\n", norm);
#endif
  ++shown;
}

}  // namespace

int main() {
  using namespace attnkit;
  std::printf("attnkit quick start: B=%lld, N=%lld tokens, Hq=%lld query heads sharing Hkv=%lld KV head, D=%lld\n",
              static_cast<long long>(kBatch), static_cast<long long>(kTokens), static_cast<long long>(kQHeads),
              static_cast<long long>(kKVHeads), static_cast<long long>(kHeadDim));
  std::printf("Grids: row i = query, column j = key, 1 = allowed. p = position of query i.\n");
  const Problem p(20261122);

  show("full (encoder, cross attention)", "j < Lk", FullMask{}, p);
  show("causal (decoder)", "j <= p", CausalMask{}, p);

  AttentionOptions padded;
  const int32_t lens[1] = {5};
  padded.q_lens = lens;
  padded.kv_lens = lens;
  show("causal & padding, valid length 5 of 8 (padded rows output 0)", "i < Lq and j < Lk and j <= p",
       CausalMask{} & PaddingMask{}, p, padded);

  AttentionOptions top_left;
  top_left.alignment = Alignment::TopLeft;
  AttentionOptions cached;  // 3 cached tokens: Lq = 5 new queries over Lk = 8 keys, bottom-right
  const int32_t new_q[1] = {5};
  cached.q_lens = new_q;
  show("causal, 5 new queries after 3 cached tokens (bottom-right: p = i + 3)", "j <= i + (Lk - Lq)", CausalMask{}, p,
       cached);
  cached.alignment = Alignment::TopLeft;
  show("causal, same lengths, top-left alignment (PyTorch is_causal: p = i)", "j <= i", CausalMask{}, p, cached);

  show("sliding_window(3) (Mistral sliding_window=3, FlashAttention window (2, 0))", "p - 3 < j <= p",
       from_hf_sliding_window(3), p);
  show("local(2, 1) (FlashAttention window_size=(2, 1))", "p - 2 <= j <= p + 1", from_flash_window(2, 1), p);
  show("prefix_lm(3) (GLM / T5 prefix decoder)", "j < 3 or j <= p", PrefixLMMask(3), p);

  const int32_t docs[kTokens] = {0, 0, 0, 1, 1, 2, 2, 2};  // three packed documents
  show("document & causal (packed sequences 3 + 2 + 3)", "doc(i) == doc(j) and j <= p",
       DocumentMask(docs) & CausalMask{}, p);
  show("sink_window(1, 3) (StreamingLLM: 1 sink + window of 3)", "(j < 1 or p - 3 < j) and j <= p",
       SinkWindowMask(1, 3), p);

  // 2x2 blocks: a block-diagonal band plus the first key block for everyone.
  const uint8_t block_map[4 * 4] = {1, 0, 0, 0,  //
                                    1, 1, 0, 0,  //
                                    1, 0, 1, 0,  //
                                    1, 0, 1, 1};
  show("block_sparse(map, 2, 2) & causal", "map[i / 2][j / 2] and j <= p",
       BlockSparseMask(block_map, 2, 2, 4, 4) & CausalMask{}, p);
  show("custom: dilated causal (every other key)", "j <= p and (p - j) % 2 == 0",
       custom_mask([](const SeqCtx& s, int64_t i, int64_t j) { return j <= s.pos(i) && (s.pos(i) - j) % 2 == 0; }), p);
  show("composition: causal & ~sliding_window(3) (only keys that left the window)", "j <= p - 3",
       CausalMask{} & ~SlidingWindowMask(3), p);
  show("composition: sliding_window(2) | (document & causal)", "p - 2 < j <= p or (doc(i) == doc(j) and j <= p)",
       SlidingWindowMask(2) | (DocumentMask(docs) & CausalMask{}), p);

  std::printf("\n%d masks shown%s\n", shown,
              QUICKSTART_HAS_KERNELS ? (failed ? ", SOME MISMATCHED the reference" : ", all match the reference") : "");
  return failed ? 1 : 0;
}
