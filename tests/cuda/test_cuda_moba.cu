// MoBA on the GPU (DESIGN §5) through the front door: the device selection
// against the double-precision brute-force gate (tests/support/moba_oracle.hpp),
// and out / LSE against the fp64 reference run under exactly the mask that
// selection implies, within 2x the error of a same-dtype naive implementation.
#include <attnkit/attention.hpp>
#include <attnkit/moba/moba.hpp>

#include "cuda_harness.cuh"
#include "support/moba_oracle.hpp"

using namespace attnkit_cuda_test;

namespace {

struct MobaCase {
  int64_t B = 1, Sq = 1, Sk = 1, Hq = 1, Hkv = 1;
  MobaConfig cfg{32, 3};
  Alignment align = Alignment::BottomRight;
  std::vector<int32_t> q_lens, kv_lens;  // padded lengths (empty = full)
  std::vector<int32_t> seq_q, seq_k;     // varlen lengths (empty = padded)
  float softcap = 0.f;
  bool sink = false;
  const RopeConfig* rope = nullptr;
  bool tie_blocks = false;  // key block 2 := key block 0 in every sequence: exact gate ties
  bool varlen() const { return !seq_q.empty(); }
};

template <class T, int D>
void check_moba(const MobaCase& c) {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed << " B=" << c.B << " Sq=" << c.Sq << " Sk=" << c.Sk << " Hq=" << c.Hq << " Hkv=" << c.Hkv
               << " D=" << D << " Bs=" << c.cfg.block_size << " top_k=" << c.cfg.top_k);
  std::mt19937_64 rng(seed);
  std::vector<int32_t> cu_q{0}, cu_k{0};
  int64_t rows_q = c.B * c.Sq, rows_k = c.B * c.Sk, nseq = c.B;
  if (c.varlen()) {
    for (size_t b = 0; b < c.seq_q.size(); ++b) {
      cu_q.push_back(cu_q.back() + c.seq_q[b]);
      cu_k.push_back(cu_k.back() + c.seq_k[b]);
    }
    rows_q = cu_q.back();
    rows_k = cu_k.back();
    nseq = static_cast<int64_t>(c.seq_q.size());
  }
  auto hq = random_vector<T>(static_cast<size_t>(rows_q * c.Hq * D), rng);
  auto hk = random_vector<T>(static_cast<size_t>(rows_k * c.Hkv * D), rng);
  auto hv = random_vector<T>(static_cast<size_t>(rows_k * c.Hkv * D), rng);
  if (c.tie_blocks) {
    const int64_t Bs = c.cfg.block_size;
    for (int64_t b = 0; b < nseq; ++b) {
      const int64_t k0 = c.varlen() ? cu_k[b] : b * c.Sk, lk = c.varlen() ? c.seq_k[b] : c.Sk;
      if (lk < 3 * Bs) continue;
      std::copy_n(&hk[static_cast<size_t>(k0 * c.Hkv * D)], Bs * c.Hkv * D,
                  &hk[static_cast<size_t>((k0 + 2 * Bs) * c.Hkv * D)]);
    }
  }
  std::vector<float> sinks;
  for (int64_t h = 0; h < c.Hq; ++h) sinks.push_back(std::uniform_real_distribution<float>(-1.f, 3.f)(rng));

  DevBuf<T> dq(hq), dk(hk), dv(hv), dout(static_cast<size_t>(rows_q * c.Hq * D));
  const size_t lse_n = static_cast<size_t>(rows_q * c.Hq);
  DevBuf<float> dlse(lse_n), dsinks(sinks);
  DevBuf<int32_t> dql(c.q_lens.empty() ? std::vector<int32_t>{0} : c.q_lens),
      dkl(c.kv_lens.empty() ? std::vector<int32_t>{0} : c.kv_lens), dcq(cu_q), dck(cu_k);
  dout.poison();
  dlse.poison();

  AttentionOptions oh;
  oh.alignment = c.align;
  oh.softcap = c.softcap;
  if (c.sink) oh.sink_logits = sinks.data();
  if (!c.q_lens.empty()) oh.q_lens = c.q_lens.data();
  if (!c.kv_lens.empty()) oh.kv_lens = c.kv_lens.data();
  AttentionOptions od = oh;
  od.lse = dlse.ptr;
  od.sink_logits = c.sink ? dsinks.ptr : nullptr;
  od.q_lens = c.q_lens.empty() ? nullptr : dql.ptr;
  od.kv_lens = c.kv_lens.empty() ? nullptr : dkl.ptr;
  od.rope = c.rope;

  MobaSelection sel;
  if (c.varlen()) {
    int64_t mq = 0, mk = 0;
    for (size_t b = 0; b < c.seq_q.size(); ++b)
      mq = std::max<int64_t>(mq, c.seq_q[b]), mk = std::max<int64_t>(mk, c.seq_k[b]);
    const VarlenSeqs sd{dcq.ptr, dck.ptr, nseq, mq, mk};
    const Tensor3<const T> q_d(dq.ptr, {rows_q, c.Hq, D}), k_d(dk.ptr, {rows_k, c.Hkv, D}),
        v_d(dv.ptr, {rows_k, c.Hkv, D});
    attention_varlen(q_d, k_d, v_d, Tensor3<T>(dout.ptr, {rows_q, c.Hq, D}), sd, c.cfg, od);
    sel = moba_select_varlen(q_d, k_d, sd, c.cfg, od);
  } else {
    const Tensor4<const T> q_d(dq.ptr, {c.B, c.Sq, c.Hq, D}), k_d(dk.ptr, {c.B, c.Sk, c.Hkv, D}),
        v_d(dv.ptr, {c.B, c.Sk, c.Hkv, D});
    attention(q_d, k_d, v_d, Tensor4<T>(dout.ptr, {c.B, c.Sq, c.Hq, D}), c.cfg, od);
    sel = moba_select(q_d, k_d, c.cfg, od);
  }
  cuda_ok(cudaDeviceSynchronize());

  if (c.rope) {  // the reference and the oracle take host-rotated q and k (DESIGN §2 positions)
    std::vector<int64_t> qpos, kpos;
    for (int64_t b = 0; b < nseq; ++b) {
      const int64_t lq = c.varlen() ? c.seq_q[b] : c.Sq, lk = c.varlen() ? c.seq_k[b] : c.Sk;
      for (int64_t i = 0; i < lq; ++i)
        qpos.push_back(std::max<int64_t>(0, c.align == Alignment::BottomRight ? i + lk - lq : i));
      for (int64_t j = 0; j < lk; ++j) kpos.push_back(j);
    }
    ApplyRopeOptions aq, ak;
    aq.positions = qpos.data();
    ak.positions = kpos.data();
    apply_rope(Tensor4<T>(hq.data(), {1, rows_q, c.Hq, D}), *c.rope, aq);
    apply_rope(Tensor4<T>(hk.data(), {1, rows_k, c.Hkv, D}), *c.rope, ak);
  }
  std::vector<SeqRows> seqs;
  for (int64_t b = 0; b < nseq; ++b) {
    if (c.varlen())
      seqs.push_back({cu_q[b], cu_k[b], c.seq_q[b], c.seq_k[b]});
    else
      seqs.push_back(
          {b * c.Sq, b * c.Sk, c.q_lens.empty() ? c.Sq : c.q_lens[b], c.kv_lens.empty() ? c.Sk : c.kv_lens[b]});
  }
  check_selection(hq, hk, c.Hq, c.Hkv, D, seqs, c.align, c.cfg, sel);

  ReferenceOutput ref;
  std::vector<T> naive, dummy(static_cast<size_t>(rows_q * c.Hq * D));
  const MobaSelectionMask mask = sel.mask();
  if (c.varlen()) {
    const VarlenSeqs sh{cu_q.data(), cu_k.data(), nseq, 0, 0};
    const Tensor3<const T> q(hq.data(), {rows_q, c.Hq, D}), k(hk.data(), {rows_k, c.Hkv, D}),
        v(hv.data(), {rows_k, c.Hkv, D});
    ref = reference_attention_varlen<T>(q, k, v, sh, mask, oh);
    naive = naive_same_dtype(make_params_varlen<T>(q, k, v, Tensor3<T>(dummy.data(), {rows_q, c.Hq, D}), sh, oh), mask,
                             rows_q);
  } else {
    const Tensor4<const T> q(hq.data(), {c.B, c.Sq, c.Hq, D}), k(hk.data(), {c.B, c.Sk, c.Hkv, D}),
        v(hv.data(), {c.B, c.Sk, c.Hkv, D});
    ref = reference_attention<T>(q, k, v, mask, oh);
    naive = naive_same_dtype(make_params<T>(q, k, v, Tensor4<T>(dummy.data(), {c.B, c.Sq, c.Hq, D}), oh), mask, rows_q);
  }
  Outcome r;
  const std::vector<T> out = dout.download();
  const std::vector<float> lse = dlse.download();
  r.out_written = all_finite(out);
  r.lse_written = std::none_of(lse.begin(), lse.end(), [](float x) { return std::isnan(x); });
  r.err = rel_l2(out, ref.out);
  r.naive_err = rel_l2(naive, ref.out);
  r.lse_err = lse_max_abs_err(lse, ref.lse);
  check_outcome(r);
}

using BF = attnkit::bfloat16;

}  // namespace

TEST_CASE("cuda moba: selection and attention vs the fp64 reference", "[cuda][moba]") {
  for (int64_t n : {1, 95, 200, 517}) {
    MobaCase c;
    c.B = 2, c.Sq = n, c.Sk = n, c.Hq = 4, c.Hkv = 2;
    c.cfg = {32, 3};
    check_moba<BF, 64>(c);
  }
  MobaCase c;  // D = 128, GQA 4, Sk not a multiple of Bs, top_k 5
  c.B = 1, c.Sq = 700, c.Sk = 700, c.Hq = 8, c.Hkv = 2;
  c.cfg = {64, 5};
  check_moba<BF, 128>(c);
  c.Hkv = 1;  // MQA
  c.Sq = c.Sk = 333;
  check_moba<BF, 128>(c);
}

TEST_CASE("cuda moba: top_k beyond the past blocks is full causal attention", "[cuda][moba]") {
  MobaCase c;
  c.B = 1, c.Sq = 300, c.Sk = 300, c.Hq = 2, c.Hkv = 1;
  c.cfg = {32, 64};
  check_moba<BF, 64>(c);
  c.cfg = {32, 1};  // own block only
  check_moba<BF, 64>(c);
}

TEST_CASE("cuda moba: gate ties go to the lower block index", "[cuda][moba][ties]") {
  MobaCase c;
  c.B = 2, c.Sq = 256, c.Sk = 256, c.Hq = 2, c.Hkv = 2;
  c.cfg = {32, 2};
  c.tie_blocks = true;
  check_moba<BF, 64>(c);
}

TEST_CASE("cuda moba: padded lengths, alignments, varlen, decode", "[cuda][moba][layout]") {
  MobaCase c;
  c.B = 3, c.Sq = 260, c.Sk = 300, c.Hq = 4, c.Hkv = 2;
  c.cfg = {40, 3};
  c.q_lens = {260, 17, 0};
  c.kv_lens = {300, 100, 64};
  check_moba<BF, 64>(c);
  c.align = Alignment::TopLeft;
  check_moba<BF, 64>(c);
  c.q_lens.clear(), c.kv_lens.clear();
  c.Sq = 300, c.Sk = 200;  // top-left with more queries than keys: own blocks past the last key
  check_moba<BF, 64>(c);

  MobaCase v;
  v.Hq = 4, v.Hkv = 1;
  v.cfg = {32, 4};
  v.seq_q = {100, 1, 250, 0};
  v.seq_k = {100, 90, 250, 7};
  check_moba<BF, 64>(v);

  MobaCase d;  // decode: a few queries against a long cache (split-KV inside)
  d.B = 2, d.Sq = 3, d.Sk = 1000, d.Hq = 8, d.Hkv = 2;
  d.cfg = {64, 4};
  d.kv_lens = {1000, 517};
  check_moba<BF, 128>(d);
}

TEST_CASE("cuda moba: softcap, sinks, RoPE, fp16", "[cuda][moba][options]") {
  MobaCase c;
  c.B = 1, c.Sq = 300, c.Sk = 300, c.Hq = 4, c.Hkv = 2;
  c.cfg = {32, 3};
  c.softcap = 20.f;
  c.sink = true;
  check_moba<BF, 64>(c);
  const RopeConfig rope = RopeConfig::yarn(RopeStyle::Half, 4.0, 128);
  c.softcap = 0.f, c.sink = false;
  c.rope = &rope;
  check_moba<BF, 64>(c);
  c.rope = nullptr;
  check_moba<attnkit::half, 64>(c);
}

TEST_CASE("cuda moba: many chunks of lists give the one-chunk result", "[cuda][moba][chunks]") {
  MobaCase c;
  c.B = 2, c.Sq = 400, c.Sk = 400, c.Hq = 4, c.Hkv = 2;
  c.cfg = {32, 4};
  moba::cuda::detail::chunk_entries_override() = 50;
  check_moba<BF, 64>(c);
  moba::cuda::detail::chunk_entries_override() = 0;
}

TEST_CASE("cuda moba: errors name the problem and leave outputs untouched", "[cuda][moba][validation]") {
  const int64_t D = 64;
  std::vector<BF> h(static_cast<size_t>(64 * 2 * D), BF(0.5f));
  DevBuf<BF> q(h), k(h), v(h), out(h.size());
  out.poison();
  DevBuf<float> slopes(std::vector<float>{0.5f, 0.25f});
  const Tensor4<const BF> qd(q.ptr, {1, 64, 2, D}), kd(k.ptr, {1, 64, 2, D}), vd(v.ptr, {1, 64, 2, D});
  const Tensor4<BF> od(out.ptr, {1, 64, 2, D});
  AttentionOptions o;
  o.alibi_slopes = slopes.ptr;
  CHECK_THROWS_WITH(attention(qd, kd, vd, od, MobaConfig{32, 2}, o), Catch::Contains("alibi_slopes"));
  CHECK_THROWS_WITH(attention(qd, kd, vd, od, MobaConfig{0, 2}), Catch::Contains("block_size"));
  const RopeConfig rerope = RopeConfig::rerope(RopeStyle::Half, 16.0);
  o = {};
  o.rope = &rerope;
  CHECK_THROWS_WITH(attention(qd, kd, vd, od, MobaConfig{32, 2}, o), Catch::Contains("rope.relative"));
  MobaBlockMeans means(1, 2, D, 32);
  CHECK_THROWS_WITH(moba_attention(qd, kd, vd, od, MobaConfig{32, 2}, means), Catch::Contains("host-side"));
  const std::vector<BF> after = out.download();
  CHECK(std::all_of(after.begin(), after.end(), [](BF x) { return std::isnan(to_float(x)); }));
}

TEST_CASE("cuda moba: decode over a growing cache with device block means", "[cuda][moba][decode]") {
  using T = BF;
  const int64_t B = 2, cap = 600, Hq = 8, Hkv = 2, D = 64;
  const MobaConfig cfg{64, 3};
  std::mt19937_64 rng(fresh_seed());
  DevBuf<T> k(random_vector<T>(static_cast<size_t>(B * cap * Hkv * D), rng)),
      v(random_vector<T>(static_cast<size_t>(B * cap * Hkv * D), rng)), q(static_cast<size_t>(B * Hq * D)),
      out_cached(static_cast<size_t>(B * Hq * D)), out_fresh(static_cast<size_t>(B * Hq * D));
  DevBuf<int32_t> lens_dev(static_cast<size_t>(B));
  const Tensor4<const T> kd(k.ptr, {B, cap, Hkv, D}), vd(v.ptr, {B, cap, Hkv, D}), qd(q.ptr, {B, 1, Hq, D});
  const Tensor4<T> oc(out_cached.ptr, {B, 1, Hq, D}), of(out_fresh.ptr, {B, 1, Hq, D});
  moba::cuda::MobaDeviceMeans means(B, Hkv, D, cfg.block_size, cap);
  std::vector<int32_t> lens{509, 130};
  means.update(kd, lens.data());
  AttentionOptions o;
  o.kv_lens = lens_dev.ptr;
  for (int step = 0; step < 6; ++step) {  // crosses the block boundary at 512
    for (auto& n : lens) ++n;
    means.update(kd, lens.data());
    lens_dev.upload(lens);
    q.upload(random_vector<T>(static_cast<size_t>(B * Hq * D), rng));
    out_cached.poison();
    moba_attention(qd, kd, vd, oc, cfg, means, o);
    attention(qd, kd, vd, of, cfg, o);  // block means recomputed from scratch
    const std::vector<T> a = out_cached.download(), b = out_fresh.download();
    INFO("step " << step << " lens " << lens[0] << ", " << lens[1]);
    REQUIRE(all_finite(a));
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
  }
  // Means that lag behind the cache are an error, and nothing is written.
  for (auto& n : lens) ++n;
  lens_dev.upload(lens);
  out_cached.poison();
  CHECK_THROWS_WITH(moba_attention(qd, kd, vd, oc, cfg, means, o), Catch::Contains("update() the means first"));
  const std::vector<T> after = out_cached.download();
  CHECK(std::all_of(after.begin(), after.end(), [](T x) { return std::isnan(to_float(x)); }));
}
