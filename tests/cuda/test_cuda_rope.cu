// Fused RoPE on the GPU (every style and scaling, partial rotary, explicit
// positions, padded lengths, decode with GQA packing, ReRoPE and Leaky ReRoPE)
// against an fp64 reference that scores each allowed (i, j) pair as
// <R(r') q_i, k_j> * scale with r' the (clipped) relative position p - j
// (<R(p) q, R(j) k> = <R(p - j) q, k>), as tests/test_rope_attention.cpp does
// on the CPU. bf16 rule (DESIGN §9): error <= 2x that of a same-dtype naive
// implementation, here one that rotates q and k (near and far copies) in
// fp32, rounds them to the storage type and picks one score per pair.
// Outputs and LSE are poisoned before each run.
#include <cuda_runtime.h>

#include <attnkit/attention.hpp>
#include <attnkit/cuda/cuda.hpp>
#include <attnkit/rope/rope.hpp>
#include <limits>
#include <string>
#include <vector>

#include "cuda_harness.cuh"
#include "masks.cuh"

using namespace attnkit_cuda_test;

namespace {

struct RCase {
  int64_t B = 1, Sq = 1, Sk = 1, Hq = 1, Hkv = 1;
  Alignment align = Alignment::BottomRight;
  std::vector<int32_t> q_lens, kv_lens;  // empty = full
  std::vector<int64_t> q_pos, kv_pos;    // [B * Sq], [B * Sk]; empty = alignment rule
};

std::string describe(const RopeConfig& c) {
  return std::string(to_string(c.style)) + " scaling=" + to_string(c.scaling) + " relative=" + to_string(c.relative) +
         " R=" + std::to_string(c.rotary_dim) + " w=" + std::to_string(c.window) + " k=" + std::to_string(c.leaky_k);
}

double clip(const RopeConfig& cfg, double r) {
  if (cfg.relative == RopeRelative::None || r <= cfg.window) return r;
  if (cfg.relative == RopeRelative::ReRoPE) return cfg.window;
  return cfg.window + (r - cfg.window) / cfg.leaky_k;
}

void rotate_double(const rope::RopeParams& p, std::vector<double>& x, double r, double scale) {
  for (int i = 0; i < p.pairs; ++i) {
    const int a = p.style == RopeStyle::Interleaved ? 2 * i : i;
    const int b = p.style == RopeStyle::Interleaved ? 2 * i + 1 : i + p.pairs;
    const double c = std::cos(r * p.inv_freq[i]) * scale, s = std::sin(r * p.inv_freq[i]) * scale;
    const double x0 = x[a], x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
  }
}

template <class T>
std::vector<T> rotated_copy(const rope::RopeParams& p, const T* row, int64_t D, double pos) {
  std::vector<float> f(static_cast<size_t>(D));
  for (int64_t d = 0; d < D; ++d) f[d] = to_float(row[d]);
  rope::rotate_row(p, f.data(), pos);
  std::vector<T> out(static_cast<size_t>(D));
  for (int64_t d = 0; d < D; ++d) out[d] = from_float<T>(f[d]);
  return out;
}

template <class T, int D, class Mask>
void rope_check(const RCase& c, const RopeConfig& cfg, const Mask& mask) {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed << " B=" << c.B << " Sq=" << c.Sq << " Sk=" << c.Sk << " Hq=" << c.Hq << " Hkv=" << c.Hkv
               << " D=" << D << " " << describe(cfg) << (c.q_pos.empty() ? "" : " explicit positions"));
  std::mt19937_64 rng(seed);
  const int64_t B = c.B, Sq = c.Sq, Sk = c.Sk, Hq = c.Hq, Hkv = c.Hkv;
  auto hq = random_vector<T>(static_cast<size_t>(B * Sq * Hq * D), rng);
  auto hk = random_vector<T>(static_cast<size_t>(B * Sk * Hkv * D), rng);
  auto hv = random_vector<T>(static_cast<size_t>(B * Sk * Hkv * D), rng);
  auto lq = [&](int64_t b) -> int64_t { return c.q_lens.empty() ? Sq : c.q_lens[b]; };
  auto lk = [&](int64_t b) -> int64_t { return c.kv_lens.empty() ? Sk : c.kv_lens[b]; };
  auto qpos = [&](int64_t b, int64_t i) -> int64_t {
    if (!c.q_pos.empty()) return c.q_pos[b * Sq + i];
    return c.align == Alignment::BottomRight ? i + lk(b) - lq(b) : i;
  };
  auto kpos = [&](int64_t b, int64_t j) -> int64_t { return c.kv_pos.empty() ? j : c.kv_pos[b * Sk + j]; };
  // The GPU's DynamicNTK length (dispatch.cuh): from the capacities.
  const int64_t seq_len = c.align == Alignment::BottomRight ? Sk : std::max(Sq, Sk);
  const rope::RopeParams rp = rope::resolve(cfg, D, seq_len);
  const double temp2 = static_cast<double>(rp.attention_scaling) * rp.attention_scaling;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const float scale_f = static_cast<float>(scale);
  const int64_t group = Hq / Hkv;

  // fp64 reference and the same-dtype naive implementation.
  std::vector<double> ref(static_cast<size_t>(B * Sq * Hq * D), 0.0), ref_lse(static_cast<size_t>(B * Hq * Sq));
  std::vector<T> naive(static_cast<size_t>(B * Sq * Hq * D), from_float<T>(0.0f));
  const double ninf = -std::numeric_limits<double>::infinity();
  for (int64_t b = 0; b < B; ++b) {
    // Rotated key rows (near and far) in the storage type.
    std::vector<std::vector<T>> kn(static_cast<size_t>(Sk * Hkv)), kf(static_cast<size_t>(Sk * Hkv));
    for (int64_t j = 0; j < lk(b); ++j)
      for (int64_t hk2 = 0; hk2 < Hkv; ++hk2) {
        const T* kr = &hk[((b * Sk + j) * Hkv + hk2) * D];
        kn[j * Hkv + hk2] = rotated_copy(rp, kr, D, rope::near_k_position(rp, kpos(b, j)));
        kf[j * Hkv + hk2] = rotated_copy(rp, kr, D, rope::far_k_position(rp, kpos(b, j)));
      }
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t hk2 = h / group;
      const SeqCtx ctx = SeqCtx::make(b, h, lq(b), lk(b), c.align);
      for (int64_t i = 0; i < Sq; ++i) {
        ref_lse[(b * Hq + h) * Sq + i] = ninf;
        if (i >= lq(b)) continue;
        const T* qr = &hq[((b * Sq + i) * Hq + h) * D];
        const std::vector<T> qn = rotated_copy(rp, qr, D, rope::near_q_position(rp, qpos(b, i)));
        const std::vector<T> qf = rotated_copy(rp, qr, D, rope::far_q_position(rp, qpos(b, i)));
        std::vector<double> q0(D);
        for (int64_t d = 0; d < D; ++d) q0[d] = to_float(qr[d]);
        std::vector<double> logit(static_cast<size_t>(lk(b)), ninf);
        std::vector<float> nl(static_cast<size_t>(lk(b)), -std::numeric_limits<float>::infinity());
        double mx = ninf;
        float nmx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < lk(b); ++j) {
          if (!mask(ctx, i, j)) continue;
          const int64_t r = qpos(b, i) - kpos(b, j);
          std::vector<double> qrot = q0;
          rotate_double(rp, qrot, clip(cfg, static_cast<double>(r)), temp2);
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qrot[d] * to_float(hk[((b * Sk + j) * Hkv + hk2) * D + d]);
          logit[j] = dot * scale;
          mx = std::max(mx, logit[j]);
          const bool near = rope::use_near_branch(rp, qpos(b, i), kpos(b, j));
          const std::vector<T>& qs = near ? qn : qf;
          const std::vector<T>& ks = near ? kn[j * Hkv + hk2] : kf[j * Hkv + hk2];
          float acc = 0.f;
          for (int64_t d = 0; d < D; ++d) acc += to_float(qs[d]) * to_float(ks[d]);
          nl[j] = to_float(from_float<T>(acc * scale_f));
          nmx = std::max(nmx, nl[j]);
        }
        if (mx == ninf) continue;
        double sum = 0;
        for (double& l : logit) sum += (l = std::exp(l - mx));
        ref_lse[(b * Hq + h) * Sq + i] = mx + std::log(sum);
        float nsum = 0;
        for (float& l : nl) nsum += (l = std::isinf(l) ? 0.f : std::exp(l - nmx));
        double* o = &ref[((b * Sq + i) * Hq + h) * D];
        std::vector<float> nacc(D, 0.f);
        for (int64_t j = 0; j < lk(b); ++j) {
          const T* vr = &hv[((b * Sk + j) * Hkv + hk2) * D];
          const float pj = to_float(from_float<T>(nl[j] / nsum));
          for (int64_t d = 0; d < D; ++d) {
            o[d] += logit[j] / sum * to_float(vr[d]);
            nacc[d] += pj * to_float(vr[d]);
          }
        }
        T* no = &naive[((b * Sq + i) * Hq + h) * D];
        for (int64_t d = 0; d < D; ++d) no[d] = from_float<T>(nacc[d]);
      }
    }
  }

  // GPU through the public dispatch.
  DevBuf<T> dq(hq), dk(hk), dv(hv), dout(static_cast<size_t>(B * Sq * Hq * D));
  DevBuf<float> dlse(static_cast<size_t>(B * Hq * Sq));
  DevBuf<int32_t> dql(c.q_lens.empty() ? std::vector<int32_t>{0} : c.q_lens);
  DevBuf<int32_t> dkl(c.kv_lens.empty() ? std::vector<int32_t>{0} : c.kv_lens);
  DevBuf<int64_t> dqp(c.q_pos.empty() ? std::vector<int64_t>{0} : c.q_pos);
  DevBuf<int64_t> dkp(c.kv_pos.empty() ? std::vector<int64_t>{0} : c.kv_pos);
  dout.poison();
  dlse.poison();
  AttentionOptions od;
  od.alignment = c.align;
  od.lse = dlse.ptr;
  od.rope = &cfg;
  od.q_lens = c.q_lens.empty() ? nullptr : dql.ptr;
  od.kv_lens = c.kv_lens.empty() ? nullptr : dkl.ptr;
  od.q_positions = c.q_pos.empty() ? nullptr : dqp.ptr;
  od.kv_positions = c.kv_pos.empty() ? nullptr : dkp.ptr;
  const Tensor4<const T> q_d(dq.ptr, {B, Sq, Hq, D}), k_d(dk.ptr, {B, Sk, Hkv, D}), v_d(dv.ptr, {B, Sk, Hkv, D});
  const Tensor4<T> o_d(dout.ptr, {B, Sq, Hq, D});
  cuda::attention_forward(make_params<T>(q_d, k_d, v_d, o_d, od, /*host_lengths=*/false), mask, od);
  cuda_ok(cudaDeviceSynchronize());
  const std::vector<T> out = dout.download();
  const std::vector<float> lse = dlse.download();
  bool lse_written = true;
  for (float x : lse)
    if (std::isnan(x)) lse_written = false;
  const double err = rel_l2(out, ref), naive_err = rel_l2(naive, ref), lse_err = lse_max_abs_err(lse, ref_lse);
  INFO("rel_l2 " << err << " (naive same-dtype " << naive_err << "), lse max abs err " << lse_err);
  CHECK(all_finite(out));
  CHECK(lse_written);
  CHECK(err <= 2.0 * naive_err + 1e-5);
  CHECK(lse_err <= 5e-3);
}

using BF = attnkit::bfloat16;

std::vector<RopeConfig> all_scalings(RopeStyle st, int64_t R = 0) {
  return {RopeConfig::standard(st, 10000, R),
          RopeConfig::standard(st, 500000, R),
          RopeConfig::linear(st, 4, 10000, R),
          RopeConfig::ntk(st, 8, 10000, R),
          RopeConfig::dynamic_ntk(st, 4, 32, 10000, R),  // T = 32 < the lengths used: the base really changes
          RopeConfig::yarn(st, 8, 64, 10000, 32, 1, 0, R),
          RopeConfig::llama3_1(st, 8, 1, 4, 256, 500000, R)};
}

}  // namespace

TEST_CASE("cuda rope: styles x scalings, prefill and decode (GQA)", "[cuda][rope]") {
  for (RopeStyle st : {RopeStyle::Interleaved, RopeStyle::Half}) {
    for (const RopeConfig& cfg : all_scalings(st)) {
      RCase c;
      c.B = 2, c.Sq = 129, c.Sk = 129, c.Hq = 4, c.Hkv = 2;
      rope_check<BF, 128>(c, cfg, CausalMask{});
      c.Sq = 3, c.Sk = 300, c.Hq = 8, c.Hkv = 2;  // decode, GQA packing
      rope_check<BF, 128>(c, cfg, CausalMask{});
    }
  }
}

TEST_CASE("cuda rope: partial rotary, head dims 64 and 256", "[cuda][rope]") {
  for (RopeStyle st : {RopeStyle::Interleaved, RopeStyle::Half}) {
    RCase c;
    c.B = 1, c.Sq = 100, c.Sk = 140, c.Hq = 4, c.Hkv = 1;
    rope_check<BF, 128>(c, RopeConfig::standard(st, 10000, 64), CausalMask{});
    rope_check<BF, 64>(c, RopeConfig::standard(st, 10000, 32), FullMask{});
    rope_check<BF, 64>(c, RopeConfig::yarn(st, 4, 64, 10000, 32, 1, 0, 48), CausalMask{});
    c.Sq = 1;
    rope_check<BF, 64>(c, RopeConfig::llama3_1(st, 8, 1, 4, 64, 500000, 32), CausalMask{});
  }
  RCase c;
  c.B = 1, c.Sq = 77, c.Sk = 90, c.Hq = 2, c.Hkv = 1;
  rope_check<BF, 256>(c, RopeConfig::standard(RopeStyle::Half), CausalMask{});
  c.Sq = 5;
  rope_check<BF, 256>(c, RopeConfig::standard(RopeStyle::Interleaved), CausalMask{});
}

TEST_CASE("cuda rope: alignments, Lq > Lk (negative positions), padded lengths, windows", "[cuda][rope]") {
  const RopeConfig half = RopeConfig::standard(RopeStyle::Half);
  for (Alignment al : {Alignment::TopLeft, Alignment::BottomRight}) {
    RCase c;
    c.B = 2, c.Sq = 70, c.Sk = 50, c.Hq = 2, c.Hkv = 2, c.align = al;
    rope_check<BF, 128>(c, half, FullMask{});  // BR: queries at -20..49
    rope_check<BF, 128>(c, half, CausalMask{});
  }
  RCase c;
  c.B = 4, c.Sq = 130, c.Sk = 300, c.Hq = 4, c.Hkv = 2;
  c.q_lens = {130, 17, 0, 64};
  c.kv_lens = {300, 0, 5, 64};
  rope_check<BF, 128>(c, half, CausalMask{});
  rope_check<BF, 128>(c, RopeConfig::standard(RopeStyle::Interleaved), SlidingWindowMask(33));
  c.Sq = 9;  // decode with padding
  c.q_lens = {9, 1, 0, 4};
  rope_check<BF, 128>(c, half, CausalMask{});
}

TEST_CASE("cuda rope: explicit positions (left padding, large offsets, table fallback)", "[cuda][rope]") {
  RCase c;
  c.B = 2, c.Sq = 40, c.Sk = 40, c.Hq = 4, c.Hkv = 2;
  for (int64_t b = 0; b < c.B; ++b) {
    for (int64_t i = 0; i < c.Sq; ++i) c.q_pos.push_back(b == 0 ? i : std::max<int64_t>(0, i - 7));
    for (int64_t j = 0; j < c.Sk; ++j) c.kv_pos.push_back(b == 0 ? j : std::max<int64_t>(0, j - 7));
  }
  for (RopeStyle st : {RopeStyle::Interleaved, RopeStyle::Half}) {
    rope_check<BF, 128>(c, RopeConfig::standard(st), CausalMask{});
    rope_check<BF, 128>(c, RopeConfig::yarn(st, 8, 16), CausalMask{});
  }
  // Positions near 2^20, far outside the default-position table: on-the-fly angles.
  RCase d = c;
  for (auto& x : d.q_pos) x += (int64_t(1) << 20);
  for (auto& x : d.kv_pos) x += (int64_t(1) << 20);
  rope_check<BF, 128>(d, RopeConfig::standard(RopeStyle::Half, 500000), CausalMask{});
  d.Sq = 1;  // decode
  d.q_pos.assign({(int64_t(1) << 20) + 39, (int64_t(1) << 20) + 32});
  rope_check<BF, 128>(d, RopeConfig::llama3_1(RopeStyle::Half), CausalMask{});
}

TEST_CASE("cuda rope: decode Sq 1..16 with GQA packing, long KV", "[cuda][rope]") {
  const RopeConfig llama = RopeConfig::llama3_1(RopeStyle::Half);
  for (int64_t sq : {1, 2, 7, 16}) {
    RCase c;
    c.B = 1, c.Sq = sq, c.Sk = sq == 1 ? 5000 : 1100, c.Hq = 32, c.Hkv = 8;
    rope_check<BF, 128>(c, llama, CausalMask{});
  }
  RCase c;  // MQA, group of 8 packed
  c.B = 2, c.Sq = 4, c.Sk = 700, c.Hq = 8, c.Hkv = 1;
  rope_check<BF, 64>(c, RopeConfig::standard(RopeStyle::Interleaved), CausalMask{});
}

TEST_CASE("cuda rope: fp16 storage", "[cuda][rope]") {
  RCase c;
  c.B = 1, c.Sq = 65, c.Sk = 65, c.Hq = 2, c.Hkv = 1;
  rope_check<attnkit::half, 128>(c, RopeConfig::yarn(RopeStyle::Half, 4, 32), CausalMask{});
  c.Sq = 2;
  rope_check<attnkit::half, 128>(c, RopeConfig::rerope(RopeStyle::Half, 20), CausalMask{});
}

TEST_CASE("cuda rope: varlen (absolute, host-rotated reference)", "[cuda][rope][varlen]") {
  const RopeConfig inter = RopeConfig::standard(RopeStyle::Interleaved, 500000.0);
  const RopeConfig yarn = RopeConfig::yarn(RopeStyle::Half, 4, 64);
  for (const RopeConfig* cfg : {&inter, &yarn}) {
    Case v;
    v.Hq = 8, v.Hkv = 2, v.rope = cfg;
    v.seq_q = {100, 1, 0, 257, 63};
    v.seq_k = {100, 40, 7, 257, 300};
    check_case<BF, 128, Entry::Dispatch>(v, CausalMask{});
    v.seq_q = {1, 16, 5, 0};  // decode-sized varlen
    v.seq_k = {1000, 77, 0, 4000};
    check_case<BF, 128, Entry::Dispatch>(v, CausalMask{});
  }
}

TEST_CASE("cuda rope: ReRoPE and Leaky ReRoPE, prefill (windows below and above a tile)", "[cuda][rope][rerope]") {
  for (RopeStyle st : {RopeStyle::Interleaved, RopeStyle::Half}) {
    for (double w : {0.0, 8.0, 100.0}) {
      const RopeConfig cfgs[] = {
          RopeConfig::rerope(st, w), RopeConfig::leaky_rerope(st, w, 4.0),
          RopeConfig::leaky_rerope(st, w, 2.5, 10000, 64),                     // partial rotary
          RopeConfig::yarn(st, 4, 16).with_relative(RopeRelative::ReRoPE, w),  // + temperature
      };
      for (const RopeConfig& cfg : cfgs) {
        RCase c;
        c.B = 2, c.Sq = 200, c.Sk = 200, c.Hq = 4, c.Hkv = 2;
        rope_check<BF, 128>(c, cfg, CausalMask{});
      }
    }
  }
  RCase c;
  c.B = 1, c.Sq = 90, c.Sk = 150, c.Hq = 2, c.Hkv = 1;  // KV-cache prefix, D 64 and 256, window mask
  rope_check<BF, 64>(c, RopeConfig::leaky_rerope(RopeStyle::Half, 30, 3), CausalMask{});
  rope_check<BF, 64>(c, RopeConfig::rerope(RopeStyle::Interleaved, 10), SlidingWindowMask(60));
  rope_check<BF, 256>(
      c, RopeConfig::llama3_1(RopeStyle::Half, 8, 1, 4, 32).with_relative(RopeRelative::LeakyReRoPE, 40, 2),
      CausalMask{});
  c.q_lens = {71};  // padded
  c.kv_lens = {100};
  rope_check<BF, 128>(c, RopeConfig::rerope(RopeStyle::Half, 20), CausalMask{});
}

TEST_CASE("cuda rope: ReRoPE and Leaky ReRoPE, decode and explicit positions", "[cuda][rope][rerope]") {
  for (RopeStyle st : {RopeStyle::Interleaved, RopeStyle::Half}) {
    for (int64_t sq : {1, 4, 16}) {
      RCase c;
      c.B = 2, c.Sq = sq, c.Sk = 2000, c.Hq = 8, c.Hkv = 2;
      rope_check<BF, 128>(c, RopeConfig::rerope(st, 512), CausalMask{});
      rope_check<BF, 128>(c, RopeConfig::leaky_rerope(st, 37, 3), CausalMask{});
    }
  }
  RCase c;
  c.B = 2, c.Sq = 50, c.Sk = 50, c.Hq = 2, c.Hkv = 1;
  for (int64_t b = 0; b < c.B; ++b) {
    for (int64_t i = 0; i < c.Sq; ++i) c.q_pos.push_back(b == 0 ? i : 3 * i + 5);
    for (int64_t j = 0; j < c.Sk; ++j) c.kv_pos.push_back(b == 0 ? j : 3 * j + 5);
  }
  rope_check<BF, 128>(c, RopeConfig::leaky_rerope(RopeStyle::Half, 16, 4), CausalMask{});
  rope_check<BF, 128>(c, RopeConfig::rerope(RopeStyle::Interleaved, 9), CausalMask{});
}

TEST_CASE("cuda rope: relative modes reject non-causal masks before writing", "[cuda][rope][rerope]") {
  const int64_t B = 1, S = 16, H = 2, D = 64;
  std::vector<BF> h(static_cast<size_t>(B * S * H * D), from_float<BF>(0.5f));
  DevBuf<BF> q(h), k(h), v(h), o(h);
  o.poison();
  const RopeConfig cfg = RopeConfig::rerope(RopeStyle::Half, 4);
  AttentionOptions od;
  od.rope = &cfg;
  const Tensor4<const BF> qt(q.ptr, {B, S, H, D}), kt(k.ptr, {B, S, H, D}), vt(v.ptr, {B, S, H, D});
  const Tensor4<BF> ot(o.ptr, {B, S, H, D});
  CHECK_THROWS_AS(attention(qt, kt, vt, ot, FullMask{}, od), attnkit::Error);
  cuda_ok(cudaDeviceSynchronize());
  bool untouched = true;
  for (BF x : o.download()) untouched = untouched && std::isnan(to_float(x));
  CHECK(untouched);
}
