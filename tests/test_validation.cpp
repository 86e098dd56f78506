// Every bad argument is rejected with attnkit::Error carrying the documented
// message (argument, value, rule), before anything is written: the reference
// and, once the CPU kernels exist, the front door are both checked, the latter
// with a poisoned output that must come back untouched.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "support/test_util.hpp"

#if __has_include("attnkit/cpu/forward.hpp")
#include <attnkit/attention.hpp>
#define ATTNKIT_TEST_FRONT_DOOR 1
#else
#define ATTNKIT_TEST_FRONT_DOOR 0
#endif

namespace {

using namespace attnkit;

constexpr float kPoison = -12345.5f;

// A valid padded problem whose buffers are large enough for every bad view
// the cases below make of them (more heads, longer sequences, strides).
struct Padded {
  static constexpr int64_t B = 2, Sq = 5, Sk = 6, Hq = 4, Hkv = 2, D = 8, Dv = 8;
  static constexpr size_t kRoom = 2 * 6 * 32 * 300 * 2;
  std::vector<float> q, k, v, out, lse;
  Tensor4<const float> qv, kv, vv;
  Tensor4<float> ov;
  AttentionOptions o;

  Padded() : q(kRoom, 0.25f), k(kRoom, -0.5f), v(kRoom, 1.0f), out(kRoom), lse(kRoom) {
    qv = Tensor4<const float>(q.data(), {B, Sq, Hq, D});
    kv = Tensor4<const float>(k.data(), {B, Sk, Hkv, D});
    vv = Tensor4<const float>(v.data(), {B, Sk, Hkv, Dv});
    ov = Tensor4<float>(out.data(), {B, Sq, Hq, Dv});
    o.lse = lse.data();
  }
  void poison() {
    std::fill(out.begin(), out.end(), kPoison);
    std::fill(lse.begin(), lse.end(), kPoison);
  }
  bool untouched() const {
    for (float x : out)
      if (x != kPoison) return false;
    for (float x : lse)
      if (x != kPoison) return false;
    return true;
  }
};

struct Varlen {
  static constexpr int64_t Hq = 4, Hkv = 2, D = 8, Dv = 8, Tq = 8, Tk = 9;
  std::vector<int32_t> cu_q{0, 3, 8}, cu_k{0, 4, 9};
  std::vector<float> q, k, v, out, lse;
  Tensor3<const float> qv, kv, vv;
  Tensor3<float> ov;
  VarlenSeqs seqs;
  AttentionOptions o;

  Varlen() : q(Tq * Hq * D, 0.25f), k(Tk * Hkv * D, -0.5f), v(Tk * Hkv * Dv, 1.0f), out(Tq * Hq * Dv), lse(Tq * Hq) {
    qv = Tensor3<const float>(q.data(), {Tq, Hq, D});
    kv = Tensor3<const float>(k.data(), {Tk, Hkv, D});
    vv = Tensor3<const float>(v.data(), {Tk, Hkv, Dv});
    ov = Tensor3<float>(out.data(), {Tq, Hq, Dv});
    seqs.cu_seqlens_q = cu_q.data();
    seqs.cu_seqlens_k = cu_k.data();
    seqs.batch = 2;
    o.lse = lse.data();
  }
  void poison() {
    std::fill(out.begin(), out.end(), kPoison);
    std::fill(lse.begin(), lse.end(), kPoison);
  }
  bool untouched() const {
    for (float x : out)
      if (x != kPoison) return false;
    for (float x : lse)
      if (x != kPoison) return false;
    return true;
  }
};

enum class Who { Both, FrontDoorOnly };

// Every mask type given to the front door instantiates the whole CPU kernel
// set, which costs minutes of compile time under sanitizers. The front door
// runs the same validate_mask as the reference, so three mask types (a plain
// one, a parameterised one, one with an extent check) prove it is called; the
// remaining mask cases go through the reference only.
template <class Mask>
constexpr bool kFrontDoorMask = std::is_same_v<Mask, CausalMask> || std::is_same_v<Mask, SlidingWindowMask> ||
                                std::is_same_v<Mask, BlockSparseMask>;

template <class Mask>
void expect_rejected(Padded& p, const Mask& mask, const std::string& message, Who who = Who::Both) {
  INFO("expected: " << message);
  if (who == Who::Both) {
    CHECK_THROWS_WITH(reference_attention(p.qv, p.kv, p.vv, mask, p.o), message);
    CHECK_THROWS_AS(reference_attention(p.qv, p.kv, p.vv, mask, p.o), std::invalid_argument);
  }
#if ATTNKIT_TEST_FRONT_DOOR
  if constexpr (kFrontDoorMask<Mask>) {
    p.poison();
    CHECK_THROWS_WITH(attention(p.qv, p.kv, p.vv, p.ov, mask, p.o), message);
    CHECK_THROWS_AS(attention(p.qv, p.kv, p.vv, p.ov, mask, p.o), attnkit::Error);
    CHECK(p.untouched());
  }
#endif
}

template <class Mask>
void expect_rejected(Varlen& p, const Mask& mask, const std::string& message) {
  INFO("expected: " << message);
  CHECK_THROWS_WITH(reference_attention_varlen(p.qv, p.kv, p.vv, p.seqs, mask, p.o), message);
  CHECK_THROWS_AS(reference_attention_varlen(p.qv, p.kv, p.vv, p.seqs, mask, p.o), attnkit::Error);
#if ATTNKIT_TEST_FRONT_DOOR
  if constexpr (kFrontDoorMask<Mask>) {
    p.poison();
    CHECK_THROWS_WITH(attention_varlen(p.qv, p.kv, p.vv, p.ov, p.seqs, mask, p.o), message);
    CHECK(p.untouched());
  }
#endif
}

}  // namespace

TEST_CASE("validation: the valid problems are accepted (control)", "[validation]") {
  Padded p;
  CHECK_NOTHROW(reference_attention(p.qv, p.kv, p.vv, CausalMask{}, p.o));
  Varlen v;
  CHECK_NOTHROW(reference_attention_varlen(v.qv, v.kv, v.vv, v.seqs, CausalMask{}, v.o));
#if ATTNKIT_TEST_FRONT_DOOR
  // The poison check below means something only if a valid call does write.
  p.poison();
  CHECK_NOTHROW(attention(p.qv, p.kv, p.vv, p.ov, CausalMask{}, p.o));
  CHECK_FALSE(p.untouched());
  v.poison();
  CHECK_NOTHROW(attention_varlen(v.qv, v.kv, v.vv, v.ov, v.seqs, CausalMask{}, v.o));
  CHECK_FALSE(v.untouched());
#endif
}

TEST_CASE("validation: shapes that disagree", "[validation]") {
  Padded p;
  const CausalMask m;
  SECTION("batch") {
    p.kv.shape[0] = 3;
    expect_rejected(p, m, "attnkit: k.shape[0] (3) must equal batch size of q (2)");
  }
  SECTION("v batch") {
    p.vv.shape[0] = 1;
    expect_rejected(p, m, "attnkit: v.shape[0] (1) must equal batch size of q (2)");
  }
  SECTION("head dim of k") {
    p.kv.shape[3] = 7;
    expect_rejected(p, m, "attnkit: k.shape[3] (7) must equal the head dim of q (8)");
  }
  SECTION("key length of v") {
    p.vv.shape[1] = 5;
    expect_rejected(p, m, "attnkit: v.shape[1] (5) must equal the key length of k (6)");
  }
  SECTION("kv heads of v") {
    p.vv.shape[2] = 1;
    expect_rejected(p, m, "attnkit: v.shape[2] (1) must equal num_kv_heads of k (2)");
  }
  SECTION("out batch") {
    p.ov.shape[0] = 1;
    expect_rejected(p, m, "attnkit: out.shape[0] (1) must equal batch size of q (2)", Who::FrontDoorOnly);
  }
  SECTION("out query length") {
    p.ov.shape[1] = 4;
    expect_rejected(p, m, "attnkit: out.shape[1] (4) must equal the query length of q (5)", Who::FrontDoorOnly);
  }
  SECTION("out heads") {
    p.ov.shape[2] = 2;
    expect_rejected(p, m, "attnkit: out.shape[2] (2) must equal num_q_heads of q (4)", Who::FrontDoorOnly);
  }
  SECTION("out head dim") {
    p.ov.shape[3] = 7;
    expect_rejected(p, m, "attnkit: out.shape[3] (7) must equal the head dim of v (8)", Who::FrontDoorOnly);
  }
  SECTION("negative extent") {
    p.qv.shape[1] = -1;
    expect_rejected(p, m, "attnkit: q.shape[1] (-1) must be >= 0");
  }
}

TEST_CASE("validation: heads and head dims", "[validation]") {
  Padded p;
  const CausalMask m;
  SECTION("Hq % Hkv != 0") {
    p.qv.shape[2] = 30;
    p.kv.shape[2] = 8;
    p.vv.shape[2] = 8;
    p.ov.shape[2] = 30;
    expect_rejected(p, m, "attnkit: num_q_heads (30) must be a multiple of num_kv_heads (8)");
  }
  SECTION("no kv heads") {
    p.kv.shape[2] = 0;
    p.vv.shape[2] = 0;
    expect_rejected(p, m, "attnkit: num_kv_heads (0) must be >= 1");
  }
  SECTION("head dim too large") {
    for (auto* t : {&p.qv, &p.kv}) t->shape[3] = 300;
    expect_rejected(p, m, "attnkit: head_dim (300) must be in [1, 256]");
  }
  SECTION("head dim zero") {
    for (auto* t : {&p.qv, &p.kv}) t->shape[3] = 0;
    expect_rejected(p, m, "attnkit: head_dim (0) must be in [1, 256]");
  }
  SECTION("value head dim too large") {
    p.vv.shape[3] = 257;
    p.ov.shape[3] = 257;
    expect_rejected(p, m, "attnkit: v_head_dim (257) must be in [1, 256]");
  }
}

TEST_CASE("validation: last dimension must be contiguous", "[validation]") {
  Padded p;
  const CausalMask m;
  SECTION("q") {
    p.qv.stride[3] = 2;
    expect_rejected(p, m, "attnkit: q.stride[3] (2) must be 1 (last dimension contiguous)");
  }
  SECTION("k") {
    p.kv.stride[3] = 0;
    expect_rejected(p, m, "attnkit: k.stride[3] (0) must be 1 (last dimension contiguous)");
  }
  SECTION("v") {
    p.vv.stride[3] = 3;
    expect_rejected(p, m, "attnkit: v.stride[3] (3) must be 1 (last dimension contiguous)");
  }
  SECTION("out") {
    p.ov.stride[3] = 2;
    expect_rejected(p, m, "attnkit: out.stride[3] (2) must be 1 (last dimension contiguous)", Who::FrontDoorOnly);
  }
}

TEST_CASE("validation: null pointers", "[validation]") {
  Padded p;
  const CausalMask m;
  SECTION("q") {
    p.qv.data = nullptr;
    expect_rejected(p, m, "attnkit: q must not be null");
  }
  SECTION("k") {
    p.kv.data = nullptr;
    expect_rejected(p, m, "attnkit: k must not be null");
  }
  SECTION("v") {
    p.vv.data = nullptr;
    expect_rejected(p, m, "attnkit: v must not be null");
  }
  SECTION("out") {
    p.ov.data = nullptr;
    expect_rejected(p, m, "attnkit: out must not be null", Who::FrontDoorOnly);
  }
  SECTION("document ids") { expect_rejected(p, DocumentMask(nullptr), "attnkit: document kv_ids must not be null"); }
  SECTION("block map") {
    expect_rejected(p, BlockSparseMask(nullptr, 1, 1, 5, 6), "attnkit: block_sparse map must not be null");
  }
}

TEST_CASE("validation: mask parameters", "[validation]") {
  Padded p;
  const uint8_t map[64] = {1};
  SECTION("sliding window < 1") {
    expect_rejected(p, SlidingWindowMask(0),
                    "attnkit: window (0) must be >= 1 (number of keys including the query itself)");
  }
  SECTION("sink window < 1, inside a composition") {
    expect_rejected(p, CausalMask{} & SinkWindowMask(1, 0),
                    "attnkit: window (0) must be >= 1 (number of keys including the query itself)");
  }
  SECTION("sinks < 0") { expect_rejected(p, SinkWindowMask(-1, 2), "attnkit: sinks (-1) must be >= 0"); }
  SECTION("local bounds < -1") {
    expect_rejected(p, ~LocalMask(-2, 0), "attnkit: left (-2) must be >= -1 (-1 = unbounded)");
    expect_rejected(p, LocalMask(0, -5) | FullMask{}, "attnkit: right (-5) must be >= -1 (-1 = unbounded)");
  }
  SECTION("prefix < 0") { expect_rejected(p, PrefixLMMask(-1), "attnkit: prefix (-1) must be >= 0"); }
  SECTION("prefix < 0, nested and untiled") {
    expect_rejected(p, untiled(CausalMask{} | (FullMask{} & PrefixLMMask(-3))), "attnkit: prefix (-3) must be >= 0");
  }
  SECTION("block sizes < 1") {
    expect_rejected(p, BlockSparseMask(map, 0, 1, 5, 6), "attnkit: block_q (0) must be >= 1");
    expect_rejected(p, BlockSparseMask(map, 1, -2, 5, 6), "attnkit: block_k (-2) must be >= 1");
  }
  SECTION("block map smaller than the problem") {
    // Sq = 5 with block_q = 2 needs 3 rows of blocks; Sk = 6 with block_k = 4 needs 2 columns.
    expect_rejected(p, BlockSparseMask(map, 2, 4, 2, 2),
                    "attnkit: block_sparse num_rows (2) must cover ceil(max_q / block_q) = 3 blocks");
    expect_rejected(p, BlockSparseMask(map, 2, 4, 3, 1),
                    "attnkit: block_sparse num_cols (1) must cover ceil(max_k / block_k) = 2 blocks");
  }
}

TEST_CASE("validation: lengths and options", "[validation]") {
  Padded p;
  const CausalMask m;
  const int32_t ql[2] = {5, 6}, kl[2] = {-1, 6};
  SECTION("q_lens beyond capacity") {
    p.o.q_lens = ql;
    expect_rejected(p, m, "attnkit: q_lens[1] (6) must be in [0, Sq = 5]");
  }
  SECTION("negative kv_lens") {
    p.o.kv_lens = kl;
    expect_rejected(p, m, "attnkit: kv_lens[0] (-1) must be in [0, Sk = 6]");
  }
  SECTION("softcap < 0") {
    p.o.softcap = -1.0f;
    expect_rejected(p, m, "attnkit: softcap (-1) must be finite and >= 0 (0 = off)");
  }
  SECTION("softcap inf") {
    p.o.softcap = std::numeric_limits<float>::infinity();
    expect_rejected(p, m, "attnkit: softcap (inf) must be finite and >= 0 (0 = off)");
  }
  SECTION("scale nan") {
    p.o.scale = std::numeric_limits<float>::quiet_NaN();
    expect_rejected(p, m, "attnkit: scale (nan) must be finite");
  }
}

TEST_CASE("validation: varlen cu_seqlens", "[validation]") {
  Varlen p;
  const CausalMask m;
  SECTION("null cu_seqlens_q") {
    p.seqs.cu_seqlens_q = nullptr;
    expect_rejected(p, m, "attnkit: cu_seqlens_q must not be null");
  }
  SECTION("null cu_seqlens_k") {
    p.seqs.cu_seqlens_k = nullptr;
    expect_rejected(p, m, "attnkit: cu_seqlens_k must not be null");
  }
  SECTION("first offset not 0") {
    p.cu_q[0] = 1;
    expect_rejected(p, m, "attnkit: cu_seqlens_q[0] (1) must be 0");
  }
  SECTION("decreasing offsets") {
    p.cu_k = {0, 4, 3};
    expect_rejected(p, m, "attnkit: cu_seqlens_k[2] (3) must be >= cu_seqlens_k[1] (4)");
  }
  SECTION("offsets beyond the packed rows") {
    p.cu_q = {0, 3, 9};
    expect_rejected(p, m, "attnkit: cu_seqlens_q[batch] (9) must be <= total_q (8)");
    p.cu_q = {0, 3, 8};
    p.cu_k = {0, 4, 10};
    expect_rejected(p, m, "attnkit: cu_seqlens_k[batch] (10) must be <= total_k (9)");
  }
  SECTION("max_seqlen too small") {
    p.seqs.max_seqlen_q = 2;
    expect_rejected(p, m, "attnkit: max_seqlen_q (2) must be >= the longest query sequence (5)");
  }
  SECTION("negative batch") {
    p.seqs.batch = -1;
    expect_rejected(p, m, "attnkit: batch (-1) must be >= 0");
  }
  SECTION("padded lengths given to varlen") {
    const int32_t lens[2] = {1, 1};
    p.o.q_lens = lens;
    expect_rejected(p, m, "attnkit: q_lens / kv_lens are for the padded layout; varlen lengths come from cu_seqlens");
  }
  SECTION("varlen shapes") {
    p.vv.shape[0] = 8;
    expect_rejected(p, m, "attnkit: v.shape[0] (8) must equal total_k of k (9)");
  }
}
