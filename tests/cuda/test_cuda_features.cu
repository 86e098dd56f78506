// Layouts, GQA, head dims, lengths, decode and logit options on the GPU (bf16).
#include <thread>

#include "masks.cuh"

using namespace attnkit_cuda_test;
using T = attnkit::bfloat16;

TEST_CASE("cuda: head dims 64, 96, 128, 256", "[cuda][hdim]") {
  for (int64_t n : {1, 63, 200}) {
    Case c;
    c.B = 2, c.Sq = n, c.Sk = n + 5, c.Hq = 4, c.Hkv = 2;
    c.D = 64;
    check_case<T, 64, Entry::Dispatch>(c, CausalMask{});
    check_case<T, 64, Entry::Dispatch>(c, FullMask{});
    c.D = 96;
    check_case<T, 96, Entry::Dispatch>(c, CausalMask{});
    check_case<T, 96, Entry::Dispatch>(c, FullMask{});
    c.D = 256;
    check_case<T, 256, Entry::Dispatch>(c, CausalMask{});
    check_case<T, 256, Entry::Dispatch>(c, FullMask{});
  }
}

TEST_CASE("cuda: odd lengths", "[cuda][lengths]") {
  for (int64_t n : {1, 7, 63, 65, 257, 1000}) {
    Case c;
    c.B = 1, c.Sq = n, c.Sk = n, c.Hq = 2, c.Hkv = 1;
    check_case<T, 128>(c, CausalMask{});
    check_case<T, 128>(c, FullMask{});
    c.Sk = n + 13;  // bottom-right with a KV-cache prefix
    check_case<T, 128>(c, CausalMask{});
  }
}

TEST_CASE("cuda: GQA ratios 1, 4, 8 and MQA", "[cuda][gqa]") {
  for (int64_t hkv : {8, 2, 1}) {
    for (int64_t sq : {1, 100}) {
      Case c;
      c.B = 2, c.Sq = sq, c.Sk = 300, c.Hq = 8, c.Hkv = hkv;
      check_case<T, 128>(c, CausalMask{});
    }
  }
  Case c;  // MQA with 16 query heads
  c.B = 1, c.Sq = 70, c.Sk = 70, c.Hq = 16, c.Hkv = 1;
  check_case<T, 128>(c, CausalMask{});
}

TEST_CASE("cuda: padded lengths, including empty sequences", "[cuda][padded]") {
  Case c;
  c.B = 4, c.Sq = 130, c.Sk = 300, c.Hq = 4, c.Hkv = 2;
  c.q_lens = {130, 17, 0, 64};
  c.kv_lens = {300, 0, 5, 64};
  check_case<T, 128>(c, CausalMask{});
  check_case<T, 128>(c, FullMask{});
  check_case<T, 128>(c, SlidingWindowMask(33));
  c.Sq = 9;  // decode path with padding
  c.q_lens = {9, 1, 0, 4};
  check_case<T, 128>(c, CausalMask{});
  check_case<T, 128>(c, FullMask{});
}

TEST_CASE("cuda: varlen", "[cuda][varlen]") {
  Case c;
  c.Hq = 8, c.Hkv = 2;
  c.seq_q = {100, 1, 0, 257, 63};
  c.seq_k = {100, 40, 7, 257, 300};
  check_case<T, 128>(c, CausalMask{});
  check_case<T, 128>(c, FullMask{});
  check_case<T, 128>(c, SlidingWindowMask(50));
  c.seq_q = {1, 16, 5, 0};  // decode-sized varlen
  c.seq_k = {1000, 77, 0, 4000};
  check_case<T, 128>(c, CausalMask{});
  check_case<T, 128>(c, FullMask{});
}

TEST_CASE("cuda: fully masked rows give out 0 and lse -inf", "[cuda][masked]") {
  Case c;  // bottom-right with more queries than keys: the first rows see nothing
  c.B = 2, c.Sq = 150, c.Sk = 40, c.Hq = 2, c.Hkv = 1;
  check_case<T, 128>(c, CausalMask{});
  c.Sq = 12;  // decode path
  c.Sk = 5;
  check_case<T, 128>(c, CausalMask{});
  c.Sk = 0;  // no keys at all
  c.Sq = 33;
  check_case<T, 128>(c, FullMask{});
}

TEST_CASE("cuda: decode Sq 1..16, Sk up to 32768", "[cuda][decode]") {
  for (int64_t sq : {1, 2, 5, 16}) {
    for (int64_t sk : {1, 100, 4097, 32768}) {
      Case c;
      c.B = 2, c.Sq = sq, c.Sk = sk, c.Hq = 8, c.Hkv = 2;
      if (sq * sk > 100000) c.B = 1;
      check_case<T, 128>(c, CausalMask{});
    }
  }
  Case c;  // MQA decode, group of 8 packed
  c.B = 3, c.Sq = 2, c.Sk = 5000, c.Hq = 8, c.Hkv = 1;
  check_case<T, 128>(c, FullMask{});
}

TEST_CASE("cuda: softcap, ALiBi and sink logits", "[cuda][logits]") {
  for (int64_t sq : {1, 4, 130}) {
    Case c;
    c.B = 2, c.Sq = sq, c.Sk = 700, c.Hq = 4, c.Hkv = 2;
    c.softcap = 5.0f;
    check_case<T, 128>(c, CausalMask{});
    c.softcap = 0.f;
    c.alibi = true;
    check_case<T, 128>(c, CausalMask{});
    c.alibi = false;
    c.sink = true;
    check_case<T, 128>(c, CausalMask{});
    c.softcap = 30.f, c.alibi = true;
    check_case<T, 128>(c, SlidingWindowMask(100));
  }
}

TEST_CASE("cuda: top-left alignment", "[cuda][align]") {
  for (int64_t sq : {3, 100}) {
    Case c;
    c.B = 2, c.Sq = sq, c.Sk = 333, c.Hq = 4, c.Hkv = 4, c.align = Alignment::TopLeft;
    check_case<T, 128>(c, CausalMask{});
  }
}

TEST_CASE("cuda: runs on a user stream", "[cuda][stream]") {
  cudaStream_t st;
  cuda_ok(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  Case c;
  c.B = 2, c.Sq = 100, c.Sk = 100, c.Hq = 4, c.Hkv = 2, c.stream = st;
  check_case<T, 128>(c, CausalMask{});
  c.Sq = 1, c.Sk = 3000;
  check_case<T, 128>(c, CausalMask{});
  cudaStreamDestroy(st);
}

TEST_CASE("cuda: a 1M-token KV cache (64-bit index math)", "[cuda][large]") {
  Case c;
  c.B = 2, c.Sq = 1, c.Sk = (int64_t(1) << 20) + 3, c.Hq = 2, c.Hkv = 1, c.D = 64;
  check_case<T, 64, Entry::Dispatch>(c, CausalMask{});
}

TEST_CASE("cuda: RoPE (fused): styles, partial rotary, scalings, alignments, varlen", "[cuda][rope]") {
  RopeConfig half = RopeConfig::standard(RopeStyle::Half);
  RopeConfig inter = RopeConfig::standard(RopeStyle::Interleaved, 500000.0);
  RopeConfig partial = RopeConfig::standard(RopeStyle::Half, 10000.0, 64);  // rotary_dim 64 of 128
  RopeConfig llama3 = RopeConfig::standard(RopeStyle::Half, 500000.0);
  llama3.scaling = RopeScaling::Llama3, llama3.factor = 8.0, llama3.original_max_position = 8192;
  RopeConfig yarn = RopeConfig::standard(RopeStyle::Half);
  yarn.scaling = RopeScaling::YaRN, yarn.factor = 4.0, yarn.original_max_position = 256;
  for (const RopeConfig* cfg : {&half, &inter, &partial, &llama3, &yarn}) {
    Case c;
    c.B = 2, c.Sq = 100, c.Sk = 300, c.Hq = 8, c.Hkv = 2, c.rope = cfg;
    check_case<T, 128, Entry::Dispatch>(c, CausalMask{});
    c.Sq = 3;  // decode
    check_case<T, 128, Entry::Dispatch>(c, CausalMask{});
  }
  Case c;
  c.B = 1, c.Sq = 70, c.Sk = 50, c.Hq = 4, c.Hkv = 4, c.rope = &half, c.align = Alignment::TopLeft;
  check_case<T, 128, Entry::Dispatch>(c, CausalMask{});
  Case v;
  v.Hq = 4, v.Hkv = 2, v.rope = &inter;
  v.seq_q = {30, 1, 65};
  v.seq_k = {30, 200, 65};
  check_case<T, 128, Entry::Dispatch>(v, CausalMask{});
}

// ---- Split-KV decode: the merge inside the kernel, per-stream workspaces ----

namespace {

// Splits the decode plan gives a problem (the launch's own computation), so
// a test can assert that it exercises the split path it claims to. Cfg: the
// decode configuration (default: what forward_hdim runs).
template <int D, class Mask, class Cfg = typename cuda::Configs<T, D>::DecodeCta>
int planned_splits(int64_t B, int64_t Sq, int64_t Sk, int64_t Hq, int64_t Hkv) {
  cuda::detail::DeviceState& st = cuda::detail::device_state(cuda::detail::current_device());
  auto kernel = cuda::detail::kernel_for<Cfg, Mask>();
  cuda::detail::allow_smem(kernel, Cfg::kSmemBytes, st.dev);
  const int per_sm = cuda::detail::ctas_per_sm(kernel, Cfg::kThreads, Cfg::kSmemBytes, st.dev);
  const int64_t G = Hq / Hkv, m_blocks = (Sq * G + Cfg::kBlockM - 1) / Cfg::kBlockM;
  int64_t tps = 0, min_tiles = 4;
  if constexpr (cuda::IsDecodeConfig<Cfg>::value) min_tiles = Cfg::kMinTilesPerSplit;
  return cuda::detail::plan_splits(B * (Hq / G) * m_blocks, Sk, Cfg::kBlockN, int64_t(st.sms) * per_sm, &tps,
                                   min_tiles);
}

// One padded decode problem with its fp64 reference, launched as often as a
// test likes on any stream; check() compares the last result.
template <int kD = 128>
struct DecodeProblem {
  int64_t B, Sq, Sk, Hq, Hkv;
  static constexpr int64_t D = kD;
  std::vector<T> hq, hk, hv;
  std::vector<float> sinks;
  std::unique_ptr<DevBuf<T>> dq, dk, dv, dout;
  std::unique_ptr<DevBuf<float>> dlse, dsinks;
  ReferenceOutput ref;
  std::vector<T> naive;
  AttentionOptions od;
  bool kv_heads_outer = false;  // device K/V stored [B, Hkv, Sk, D] (BHSD) instead of BSHD
  DecodeProblem(int64_t b, int64_t sq, int64_t sk, int64_t hq_, int64_t hkv, bool sink, bool bhsd = false)
      : B(b), Sq(sq), Sk(sk), Hq(hq_), Hkv(hkv), kv_heads_outer(bhsd) {
    std::mt19937_64 rng(fresh_seed());
    hq = random_vector<T>(size_t(B * Sq * Hq * D), rng);
    hk = random_vector<T>(size_t(B * Sk * Hkv * D), rng);
    hv = random_vector<T>(size_t(B * Sk * Hkv * D), rng);
    for (int64_t h = 0; h < Hq; ++h) sinks.push_back(std::uniform_real_distribution<float>(-1.f, 3.f)(rng));
    dq = std::make_unique<DevBuf<T>>(hq);
    if (bhsd) {
      std::vector<T> tk(hk.size()), tv(hv.size());
      for (int64_t bb = 0; bb < B; ++bb)
        for (int64_t j = 0; j < Sk; ++j)
          for (int64_t h = 0; h < Hkv; ++h)
            for (int64_t d = 0; d < D; ++d) {
              tk[size_t(((bb * Hkv + h) * Sk + j) * D + d)] = hk[size_t(((bb * Sk + j) * Hkv + h) * D + d)];
              tv[size_t(((bb * Hkv + h) * Sk + j) * D + d)] = hv[size_t(((bb * Sk + j) * Hkv + h) * D + d)];
            }
      dk = std::make_unique<DevBuf<T>>(tk);
      dv = std::make_unique<DevBuf<T>>(tv);
    } else {
      dk = std::make_unique<DevBuf<T>>(hk);
      dv = std::make_unique<DevBuf<T>>(hv);
    }
    dout = std::make_unique<DevBuf<T>>(size_t(B * Sq * Hq * D));
    dlse = std::make_unique<DevBuf<float>>(size_t(B * Sq * Hq));
    dsinks = std::make_unique<DevBuf<float>>(sinks);
    AttentionOptions oh;
    if (sink) oh.sink_logits = sinks.data();
    const Tensor4<const T> q(hq.data(), {B, Sq, Hq, D}), k(hk.data(), {B, Sk, Hkv, D}), v(hv.data(), {B, Sk, Hkv, D});
    ref = reference_attention<T>(q, k, v, CausalMask{}, oh);
    std::vector<T> dummy(size_t(B * Sq * Hq * D));
    naive =
        naive_same_dtype(make_params<T>(q, k, v, Tensor4<T>(dummy.data(), {B, Sq, Hq, D}), oh), CausalMask{}, B * Sq);
    od.lse = dlse->ptr;
    od.sink_logits = sink ? dsinks->ptr : nullptr;
  }
  AttentionParams<T> params() const {
    const int64_t kv_shape[4] = {B, Sk, Hkv, D};
    const int64_t bshd[4] = {Sk * Hkv * D, Hkv * D, D, 1}, bhsd[4] = {Hkv * Sk * D, D, Sk * D, 1};
    const int64_t(&kv_strides)[4] = kv_heads_outer ? bhsd : bshd;
    return make_params<T>(Tensor4<const T>(dq->ptr, {B, Sq, Hq, D}), Tensor4<const T>(dk->ptr, kv_shape, kv_strides),
                          Tensor4<const T>(dv->ptr, kv_shape, kv_strides), Tensor4<T>(dout->ptr, {B, Sq, Hq, D}), od,
                          false);
  }
  void poison() {
    dout->poison();
    dlse->poison();
  }
  void launch(cudaStream_t st) {
    AttentionOptions o = od;
    o.cuda_stream = st;
    cuda::attention_forward(params(), CausalMask{}, o);
  }
  // A decode configuration directly (default: forward_hdim's), with plan
  // knobs (in-kernel or kernel merge; one- or two-level for the one-warp one).
  template <class Cfg = typename cuda::Configs<T, kD>::DecodeCta>
  void launch_tuned(cudaStream_t st, cuda::DecodeTuning tune) {
    cuda::forward_with<Cfg>(params(), CausalMask{}, st, true, cuda::FusedRope{}, tune);
  }
  Outcome outcome() const {
    Outcome r;
    const std::vector<T> out = dout->download();
    const std::vector<float> lse = dlse->download();
    r.out_written = all_finite(out);
    r.lse_written = true;
    for (float x : lse)
      if (std::isnan(x)) r.lse_written = false;
    r.err = rel_l2(out, ref.out);
    r.naive_err = rel_l2(naive, ref.out);
    r.lse_err = lse_max_abs_err(lse, ref.lse);
    return r;
  }
};

}  // namespace

TEST_CASE("cuda decode: many splits at long kv, B = 1", "[cuda][decode][split]") {
  for (int64_t sk : {150001, 65536}) {
    Case c;
    c.B = 1, c.Sq = 1, c.Sk = sk, c.Hq = 8, c.Hkv = 2;
    const int splits = planned_splits<128, CausalMask>(c.B, c.Sq, c.Sk, c.Hq, c.Hkv);
    INFO("splits " << splits);
    CHECK(splits >= 32);  // one wave of decode CTAs over 2 head groups (H100: 66)
    check_case<T, 128>(c, CausalMask{});
    c.Sq = 16;  // 4 packed row blocks per head group, 4-row merge batches
    check_case<T, 128>(c, CausalMask{});
  }
}

TEST_CASE("cuda decode: one- and two-level split merges, odd chunk sizes (one-warp kernel)", "[cuda][decode][split]") {
  // flash_fwd_kernel's decode configuration (fused-RoPE decode runs it).
  using Old = cuda::Configs<T, 128>::Decode;
  DecodeProblem pr(2, 3, 9000, 8, 2, true);
  const int splits = planned_splits<128, CausalMask, Old>(2, 3, 9000, 8, 2);
  INFO("splits " << splits);
  REQUIRE(splits > 8);
  CHECK(cuda::detail::plan_split_chunk(splits) < splits);  // the default is two-level here
  for (int chunk : {0, 1 << 30, 1, 2, 3, 7, splits - 1, splits}) {
    INFO("split_chunk " << chunk);
    pr.poison();
    pr.launch_tuned<Old>(nullptr, {0, 0, chunk, true});
    cuda_ok(cudaStreamSynchronize(nullptr));
    check_outcome(pr.outcome());
  }
  // The merge as a second kernel (the default).
  pr.poison();
  pr.launch_tuned<Old>(nullptr, {0, 0, 0, false});
  cuda_ok(cudaStreamSynchronize(nullptr));
  check_outcome(pr.outcome());
  // Fewer splits than a chunk (one level) and a 2-split plan, both merges.
  for (int min_tiles : {60, 140})
    for (bool in_kernel : {false, true}) {
      pr.poison();
      pr.launch_tuned<Old>(nullptr, {min_tiles, 0, 0, in_kernel});
      cuda_ok(cudaStreamSynchronize(nullptr));
      check_outcome(pr.outcome());
    }
}

// ---- flash_decode_kernel (decode CTA of several warps, decode_kernel.cuh) ----

namespace {
template <class C>
struct Tag {
  using type = C;
};
}  // namespace

TEST_CASE("cuda decode CTA: both merges at 1, few and many splits", "[cuda][decode][split][cta]") {
  DecodeProblem pr(2, 3, 9000, 8, 2, true);  // 282 key tiles per head group
  const int splits = planned_splits<128, CausalMask>(2, 3, 9000, 8, 2);
  INFO("default splits " << splits);
  CHECK(splits > 8);
  // min tiles per split: default (many splits), 100 (2 splits), 300 (one: no partials).
  for (int min_tiles : {0, 100, 300})
    for (bool in_kernel : {false, true}) {
      INFO("min_tiles " << min_tiles << " in_kernel " << in_kernel);
      pr.poison();
      pr.launch_tuned(nullptr, {min_tiles, 0, 0, in_kernel});
      cuda_ok(cudaStreamSynchronize(nullptr));
      check_outcome(pr.outcome());
    }
  // The target shape (Hq 32 / Hkv 8, Sq 1), a kv length that is no multiple
  // of the tile or of the warps' round robin, both merges, repeated: the
  // result is bitwise the same whichever CTA merges.
  DecodeProblem big(1, 1, 40001, 32, 8, true);
  for (bool in_kernel : {false, true}) {
    std::vector<T> first;
    for (int rep = 0; rep < 3; ++rep) {
      INFO("in_kernel " << in_kernel << " rep " << rep);
      big.poison();
      big.launch_tuned(nullptr, {0, 0, 0, in_kernel});
      cuda_ok(cudaStreamSynchronize(nullptr));
      check_outcome(big.outcome());
      const std::vector<T> out = big.dout->download();
      if (rep == 0) first = out;
      CHECK(std::memcmp(out.data(), first.data(), out.size() * sizeof(T)) == 0);
    }
  }
}

TEST_CASE("cuda decode CTA: the bench's other warp / tile / ring configurations", "[cuda][decode][split][cta]") {
  DecodeProblem pr(1, 2, 20000, 8, 2, true);
  auto run = [&](auto cfg_tag, bool in_kernel) {
    using Cfg = typename decltype(cfg_tag)::type;
    INFO("warps " << Cfg::kWarps << " block_n " << Cfg::kBlockN << " stages " << Cfg::kStages << " in_kernel "
                  << in_kernel);
    pr.poison();
    pr.launch_tuned<Cfg>(nullptr, {0, 0, 0, in_kernel});
    cuda_ok(cudaStreamSynchronize(nullptr));
    check_outcome(pr.outcome());
  };
  for (bool in_kernel : {false, true}) {
    run(Tag<cuda::DecodeConfig<T, 128, 4, 32, 2>>{}, in_kernel);
    run(Tag<cuda::DecodeConfig<T, 128, 8, 16, 3>>{}, in_kernel);
    run(Tag<cuda::DecodeConfig<T, 128, 2, 32, 3>>{}, in_kernel);
  }
}

TEST_CASE("cuda decode CTA: head dims 64, 96, 256 with the in-kernel merge", "[cuda][decode][split][cta][hdim]") {
  auto one = [](auto d_tag) {
    constexpr int D = decltype(d_tag)::value;
    INFO("D " << D);
    DecodeProblem<D> pr(1, 2, 9000, 8, 2, true);
    for (bool in_kernel : {false, true})
      for (int tma : {-1, 0}) {  // TMA copies (sm_90) and the cp.async path
        INFO("in_kernel " << in_kernel << " tma " << tma);
        pr.poison();
        cuda::DecodeTuning tune{0, 0, 0, in_kernel};
        tune.tma = tma;
        pr.launch_tuned(nullptr, tune);
        cuda_ok(cudaStreamSynchronize(nullptr));
        check_outcome(pr.outcome());
      }
  };
  one(std::integral_constant<int, 64>{});
  one(std::integral_constant<int, 96>{});
  one(std::integral_constant<int, 256>{});
}

TEST_CASE("cuda decode CTA: chained calls with and without programmatic dependent launch",
          "[cuda][decode][split][cta][pdl]") {
  // Each call's output is the next call's query. With programmatic dependent
  // launch (the default on sm_90) the next call's CTAs start while this one's
  // last CTAs still merge its output, so a read of Q (or of the shared split
  // workspace) before the wait would see half-written data: the chain must
  // match the same chain launched plainly, bit for bit, and its first step
  // must match the reference.
  DecodeProblem<128> pr(1, 1, 40000, 32, 8, false);
  REQUIRE(planned_splits<128, CausalMask>(1, 1, 40000, 32, 8) > 1);
  const int64_t B = pr.B, Sk = pr.Sk, Hq = pr.Hq, Hkv = pr.Hkv, D = pr.D;
  auto chain = [&](int pdl) {
    pr.dq->upload(pr.hq);
    T* bufs[2] = {pr.dq->ptr, pr.dout->ptr};
    cuda::DecodeTuning tune;
    tune.pdl = pdl;
    std::vector<T> first;
    for (int step = 0; step < 6; ++step) {
      const auto p = make_params<T>(
          Tensor4<const T>(bufs[step % 2], {B, 1, Hq, D}), Tensor4<const T>(pr.dk->ptr, {B, Sk, Hkv, D}),
          Tensor4<const T>(pr.dv->ptr, {B, Sk, Hkv, D}), Tensor4<T>(bufs[(step + 1) % 2], {B, 1, Hq, D}), pr.od, false);
      cuda::forward_with<cuda::Configs<T, 128>::DecodeCta>(p, CausalMask{}, nullptr, true, cuda::FusedRope{}, tune);
      if (step == 0) {
        cuda_ok(cudaStreamSynchronize(nullptr));
        first = pr.dout->download();
      }
    }
    cuda_ok(cudaStreamSynchronize(nullptr));
    return std::make_pair(first, pr.dq->download());  // step 5 wrote dq
  };
  const auto plain = chain(0), pdl = chain(-1);
  CHECK(rel_l2(plain.first, pr.ref.out) <= 2.0 * rel_l2(pr.naive, pr.ref.out) + 1e-5);
  REQUIRE(pdl.first.size() == plain.first.size());
  REQUIRE(pdl.second.size() == plain.second.size());
  CHECK(std::memcmp(pdl.first.data(), plain.first.data(), plain.first.size() * sizeof(T)) == 0);
  CHECK(std::memcmp(pdl.second.data(), plain.second.data(), plain.second.size() * sizeof(T)) == 0);
  CHECK(all_finite(pdl.second));
}

namespace {
// Lets the next kernel on the stream start at once (programmatic dependent
// launch), waits ~`sleep_us`, then copies n 16-byte words src -> dst for two
// buffers (K and V): the next kernel's CTAs run their prologue while this
// kernel has not yet written those bytes.
__global__ void late_copy_kernel(const uint4* src0, uint4* dst0, const uint4* src1, uint4* dst1, size_t n,
                                 int sleep_us) {
  cuda::detail::allow_dependent_launch();
  for (int i = 0; i < sleep_us; ++i) __nanosleep(1000);
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x)
    dst0[e] = src0[e], dst1[e] = src1[e];
}
}  // namespace

TEST_CASE("cuda decode CTA: K/V written by the kernel just before, under programmatic dependent launch",
          "[cuda][decode][split][cta][pdl]") {
  // A decode step's previous kernel (the KV-cache append) writes K/V. Here
  // it writes the whole of K and V (over NaN) only after a sleep, having let
  // the decode kernel launch at once: a K/V access before the decode
  // kernel's wait would read NaN. The result must be the new K/V's, bit for
  // bit the same as with plain launches, and within the reference bound.
  DecodeProblem<128> pr(1, 1, 40000, 32, 8, false);
  REQUIRE(planned_splits<128, CausalMask>(1, 1, 40000, 32, 8) > 1);
  const DevBuf<T> src_k(pr.hk), src_v(pr.hv);
  auto run = [&](int pdl) {
    pr.dk->poison(), pr.dv->poison(), pr.poison();
    const size_t words = pr.hk.size() * sizeof(T) / 16;
    late_copy_kernel<<<132, 256>>>(reinterpret_cast<const uint4*>(src_k.ptr), reinterpret_cast<uint4*>(pr.dk->ptr),
                                   reinterpret_cast<const uint4*>(src_v.ptr), reinterpret_cast<uint4*>(pr.dv->ptr),
                                   words, 50);
    cuda_ok(cudaGetLastError());
    cuda::DecodeTuning tune;
    tune.pdl = pdl;
    pr.launch_tuned(nullptr, tune);
    cuda_ok(cudaStreamSynchronize(nullptr));
    return pr.dout->download();
  };
  const std::vector<T> plain = run(0);
  check_outcome(pr.outcome());
  const std::vector<T> early = run(-1);
  check_outcome(pr.outcome());
  REQUIRE(early.size() == plain.size());
  CHECK(std::memcmp(early.data(), plain.data(), plain.size() * sizeof(T)) == 0);
}

TEST_CASE("cuda decode CTA: K/V heads outer (BHSD) and rows outer (BSHD), TMA and cp.async copies",
          "[cuda][decode][split][cta][layout]") {
  // The tensor maps order heads and rows by stride; both orders, odd kv
  // lengths (a partial last tile), GQA 4 and MQA.
  for (bool bhsd : {true, false})
    for (int64_t hkv : {int64_t(2), int64_t(1)})
      for (int64_t sk : {int64_t(4099), int64_t(333)}) {
        DecodeProblem<128> pr(2, 1, sk, 8, hkv, false, bhsd);
        for (int tma : {-1, 0}) {
          INFO("bhsd " << bhsd << " Hkv " << hkv << " Sk " << sk << " tma " << tma);
          pr.poison();
          cuda::DecodeTuning tune;
          tune.tma = tma;
          pr.launch_tuned(nullptr, tune);
          cuda_ok(cudaStreamSynchronize(nullptr));
          check_outcome(pr.outcome());
        }
      }
}

TEST_CASE("cuda decode: sinks and LSE through the split merge", "[cuda][decode][split]") {
  for (int64_t sq : {1, 3, 16}) {
    Case c;
    c.B = 2, c.Sq = sq, c.Sk = 9000, c.Hq = 8, c.Hkv = 2, c.sink = true;
    CHECK(planned_splits<128, CausalMask>(c.B, c.Sq, c.Sk, c.Hq, c.Hkv) > 1);
    check_case<T, 128>(c, CausalMask{});
    c.softcap = 20.f, c.alibi = true;  // the transformed-logit path too
    check_case<T, 128>(c, SlidingWindowMask(3000));
  }
}

TEST_CASE("cuda decode: splits with no allowed key, and rows with none at all", "[cuda][decode][split][masked]") {
  Case c;  // kv capacity 20000 (many splits); short or empty actual lengths
  c.B = 4, c.Sq = 12, c.Sk = 20000, c.Hq = 8, c.Hkv = 2, c.sink = true;
  c.kv_lens = {5, 0, 20000, 700};  // b0: rows 0..6 see nothing (bottom-right); b1: nothing at all
  c.q_lens = {12, 12, 1, 0};       // b3: no queries
  CHECK(planned_splits<128, CausalMask>(c.B, c.Sq, c.Sk, c.Hq, c.Hkv) > 1);
  check_case<T, 128>(c, CausalMask{});
  // A window: every split but the last one or two is masked for every row.
  Case w;
  w.B = 1, w.Sq = 4, w.Sk = 40000, w.Hq = 4, w.Hkv = 1;
  check_case<T, 128>(w, SlidingWindowMask(100));
  w.sink = true;
  check_case<T, 128>(w, SlidingWindowMask(1));
}

TEST_CASE("cuda decode: head dims 64, 96, 256 through the split merge", "[cuda][decode][split][hdim]") {
  Case c;
  c.B = 1, c.Sq = 2, c.Sk = 9000, c.Hq = 8, c.Hkv = 2, c.sink = true;
  c.D = 64;
  CHECK(planned_splits<64, CausalMask>(c.B, c.Sq, c.Sk, c.Hq, c.Hkv) > 1);
  check_case<T, 64, Entry::Dispatch>(c, CausalMask{});
  c.D = 96;
  check_case<T, 96, Entry::Dispatch>(c, CausalMask{});
  c.D = 256;
  CHECK(planned_splits<256, CausalMask>(c.B, c.Sq, c.Sk, c.Hq, c.Hkv) > 1);
  check_case<T, 256, Entry::Dispatch>(c, CausalMask{});
}

TEST_CASE("cuda decode: varlen with splits", "[cuda][decode][split][varlen]") {
  Case c;
  c.Hq = 8, c.Hkv = 2, c.sink = true;
  c.seq_q = {1, 3, 16, 0, 2, 5};
  c.seq_k = {20000, 5, 9000, 300, 0, 2};  // b4: queries and no keys (out 0, lse -inf)
  check_case<T, 128>(c, CausalMask{});
  check_case<T, 128>(c, FullMask{});
}

TEST_CASE("cuda decode: repeated calls reuse the workspace and its tickets", "[cuda][decode][split]") {
  // Tickets must be zero again after every launch: a call whose unit count or
  // split count differs from the last one's would otherwise merge early, late
  // or never (outputs poisoned before each call stay NaN).
  struct Shape {
    int64_t B, Sq, Sk;
  };
  for (int rep = 0; rep < 2; ++rep)
    for (const Shape sh : {Shape{2, 1, 9000}, Shape{1, 1, 40000}, Shape{3, 5, 700}, Shape{1, 16, 33000}}) {
      Case c;
      c.B = sh.B, c.Sq = sh.Sq, c.Sk = sh.Sk, c.Hq = 8, c.Hkv = 2;
      check_case<T, 128, Entry::Dispatch>(c, CausalMask{});
    }
  // The same problem three times in a row: identical results (the merge order
  // is fixed, whichever CTA merges).
  DecodeProblem pr(1, 1, 30000, 8, 2, true);
  std::vector<T> first;
  for (int rep = 0; rep < 3; ++rep) {
    pr.poison();
    pr.launch(nullptr);
    cuda_ok(cudaStreamSynchronize(nullptr));
    check_outcome(pr.outcome());
    const std::vector<T> out = pr.dout->download();
    if (rep == 0) first = out;
    CHECK(std::memcmp(out.data(), first.data(), out.size() * sizeof(T)) == 0);
  }
}

TEST_CASE("cuda decode: two streams at once, different shapes", "[cuda][decode][split][stream]") {
  cudaStream_t s1, s2;
  cuda_ok(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  cuda_ok(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
  // Long enough (tens of us each) that the two streams' kernels overlap.
  DecodeProblem a(1, 1, 65536, 32, 8, true), b(2, 3, 20000, 8, 2, false);
  CHECK(planned_splits<128, CausalMask>(1, 1, 65536, 32, 8) > 1);
  CHECK(planned_splits<128, CausalMask>(2, 3, 20000, 8, 2) > 1);
  for (int rep = 0; rep < 3; ++rep) {
    a.poison();
    b.poison();
    for (int n = 0; n < 6; ++n) {  // interleaved launches, no host sync in between
      a.launch(s1);
      b.launch(s2);
    }
    cuda_ok(cudaStreamSynchronize(s1));
    cuda_ok(cudaStreamSynchronize(s2));
    check_outcome(a.outcome());
    check_outcome(b.outcome());
  }
  // The same with the merge inside the attention kernel: each stream's tickets
  // are its own (shared tickets would merge early or never).
  for (int rep = 0; rep < 3; ++rep) {
    a.poison();
    b.poison();
    for (int n = 0; n < 6; ++n) {
      a.launch_tuned(s1, {0, 0, 0, true});
      b.launch_tuned(s2, {0, 0, 0, true});
    }
    cuda_ok(cudaStreamSynchronize(s1));
    cuda_ok(cudaStreamSynchronize(s2));
    check_outcome(a.outcome());
    check_outcome(b.outcome());
  }
  cudaStreamDestroy(s1);
  cudaStreamDestroy(s2);
  // Workspaces are keyed by cudaStreamGetId: each host thread's per-thread
  // default stream must get its own id (else two threads would share one).
  unsigned long long id1 = 0, id2 = 0;
  cudaError_t e1 = cudaSuccess, e2 = cudaSuccess;
  std::thread t1([&] { e1 = cudaStreamGetId(cudaStreamPerThread, &id1); });
  std::thread t2([&] { e2 = cudaStreamGetId(cudaStreamPerThread, &id2); });
  t1.join();
  t2.join();
  CHECK(e1 == cudaSuccess);
  CHECK(e2 == cudaSuccess);
  CHECK(id1 != id2);
}

TEST_CASE("cuda decode: more streams than cached workspaces, and a CUDA graph", "[cuda][decode][split][stream]") {
  DecodeProblem pr(1, 2, 20000, 8, 2, true);
  std::vector<cudaStream_t> streams(cuda::detail::DeviceState::kMaxStreams + 3);
  for (auto& st : streams) cuda_ok(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  for (int rep = 0; rep < 2; ++rep)
    for (cudaStream_t st : streams) {  // the 17th stream on drops the least recently used workspace
      pr.poison();
      pr.launch(st);
      cuda_ok(cudaStreamSynchronize(st));
      check_outcome(pr.outcome());
    }
  // Captured into a graph (graph-owned workspace, tickets zeroed in the graph),
  // replayed twice.
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  cuda_ok(cudaStreamBeginCapture(streams[0], cudaStreamCaptureModeThreadLocal));
  pr.launch(streams[0]);
  cuda_ok(cudaStreamEndCapture(streams[0], &graph));
  cuda_ok(cudaGraphInstantiate(&exec, graph, 0));
  for (int rep = 0; rep < 2; ++rep) {
    pr.poison();
    cuda_ok(cudaGraphLaunch(exec, streams[1]));
    cuda_ok(cudaStreamSynchronize(streams[1]));
    check_outcome(pr.outcome());
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  for (auto st : streams) cudaStreamDestroy(st);
  // trim_workspace drops every cached workspace; the next call allocates again.
  cuda::trim_workspace();
  pr.poison();
  pr.launch(nullptr);
  cuda_ok(cudaStreamSynchronize(nullptr));
  check_outcome(pr.outcome());
}
