// Every mask and a few compositions on the GPU (bf16, D = 128): prefill with
// Sq == Sk, Sq != Sk (bottom-right), and decode (GQA-packed, split-KV).
#include "masks.cuh"

using namespace attnkit_cuda_test;
using T = attnkit::bfloat16;

namespace {

std::vector<Case> mask_shapes() {
  std::vector<Case> v;
  Case a;  // prefill, self attention, GQA 2
  a.B = 2, a.Sq = 257, a.Sk = 257, a.Hq = 4, a.Hkv = 2;
  v.push_back(a);
  Case b;  // prefill, queries are the last 65 of 1000 keys
  b.B = 1, b.Sq = 65, b.Sk = 1000, b.Hq = 2, b.Hkv = 1;
  v.push_back(b);
  Case c;  // decode: 3 queries, GQA 4 packed, split-KV
  c.B = 2, c.Sq = 3, c.Sk = 1000, c.Hq = 8, c.Hkv = 2;
  v.push_back(c);
  Case d;  // top-left alignment, more queries than keys
  d.B = 1, d.Sq = 200, d.Sk = 63, d.Hq = 2, d.Hkv = 2, d.align = Alignment::TopLeft;
  v.push_back(d);
  return v;
}

}  // namespace

TEST_CASE("cuda masks: full and causal through the dispatch", "[cuda][mask]") {
  for (const Case& c : mask_shapes()) {
    check_case<T, 128, Entry::Dispatch>(c, FullMask{});
    check_case<T, 128, Entry::Dispatch>(c, CausalMask{});
  }
}

TEST_CASE("cuda masks: sliding window", "[cuda][mask]") {
  for (const Case& c : mask_shapes())
    for (int64_t w : {1, 7, 64, 129}) check_case<T, 128>(c, SlidingWindowMask(w));
}

TEST_CASE("cuda masks: local", "[cuda][mask]") {
  for (const Case& c : mask_shapes()) {
    check_case<T, 128>(c, LocalMask(30, 5));
    check_case<T, 128>(c, LocalMask(-1, 70));
  }
}

TEST_CASE("cuda masks: prefix-LM", "[cuda][mask]") {
  for (const Case& c : mask_shapes())
    for (int64_t pfx : {0, 17, 100}) check_case<T, 128>(c, PrefixLMMask(pfx));
}

TEST_CASE("cuda masks: sink + window", "[cuda][mask]") {
  for (const Case& c : mask_shapes()) check_case<T, 128>(c, SinkWindowMask(4, 50));
}

TEST_CASE("cuda masks: document & causal", "[cuda][mask]") {
  std::mt19937_64 rng(fresh_seed());
  for (Case c : mask_shapes()) {
    if (c.align == Alignment::TopLeft) continue;  // query docs come from key positions
    DocIds ids(c.B, c.Sk, rng);
    const auto mh = DocumentMask(ids.host.data(), c.Sk) & CausalMask{};
    const auto md = DocumentMask(ids.dev->ptr, c.Sk) & CausalMask{};
    check_case<T, 128>(c, mh, md);
  }
}

TEST_CASE("cuda masks: document alone, unsorted ids, query ids", "[cuda][mask]") {
  std::mt19937_64 rng(fresh_seed());
  for (Case c : mask_shapes()) {
    if (c.align == Alignment::TopLeft) continue;  // query docs come from key positions
    DocIds ids(c.B, c.Sk, rng);
    check_case<T, 128>(c, DocumentMask(ids.host.data(), c.Sk), DocumentMask(ids.dev->ptr, c.Sk));
    // The same ids flagged unsorted: no tile classes, no key spans, the predicate everywhere.
    check_case<T, 128>(c, DocumentMask(ids.host.data(), c.Sk, false), DocumentMask(ids.dev->ptr, c.Sk, false));
    // Query documents from their own ids (here: the ids of the last Sq keys).
    std::vector<int32_t> qh;
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t i = 0; i < c.Sq; ++i) qh.push_back(ids.host[static_cast<size_t>(b * c.Sk + c.Sk - c.Sq + i)]);
    DevBuf<int32_t> qd(qh);
    DocumentMask mh(ids.host.data(), c.Sk), md(ids.dev->ptr, c.Sk);
    mh.q_ids = qh.data(), md.q_ids = qd.ptr;
    mh.q_batch_stride = md.q_batch_stride = c.Sq;
    check_case<T, 128>(c, mh & CausalMask{}, md & CausalMask{});
  }
}

TEST_CASE("cuda masks: block sparse & causal", "[cuda][mask]") {
  std::mt19937_64 rng(fresh_seed());
  for (const Case& c : mask_shapes()) {
    BlockMap m(c.Sq, c.Sk, 64, 64, rng);
    const auto mh = BlockSparseMask(m.host.data(), 64, 64, m.rows, m.cols) & CausalMask{};
    const auto md = BlockSparseMask(m.dev->ptr, 64, 64, m.rows, m.cols) & CausalMask{};
    check_case<T, 128>(c, mh, md);
  }
}

TEST_CASE("cuda masks: custom head-dependent predicate", "[cuda][mask]") {
  for (const Case& c : mask_shapes()) check_case<T, 128>(c, CustomMask<StripesMask>(StripesMask{}));
}

TEST_CASE("cuda masks: compositions", "[cuda][mask]") {
  for (const Case& c : mask_shapes()) {
    check_case<T, 128>(c, CausalMask{} & (SlidingWindowMask(3) | PrefixLMMask(20)));
    check_case<T, 128>(c, CausalMask{} & ~SlidingWindowMask(40));  // rows with p < 40 see nothing
    check_case<T, 128>(c, untiled(CausalMask{}));
  }
}
