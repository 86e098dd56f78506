// One GPU test case end to end: random inputs (fresh seed), upload, poison the
// outputs, run the CUDA kernel, download, and compare with the fp64 reference
// under the same-dtype rule (DESIGN §9): error <= 2x that of a same-dtype naive
// implementation. Every output element and LSE entry must have been written.
#pragma once

#include <cuda_runtime.h>

#include <attnkit/cuda/cuda.hpp>
#include <attnkit/rope/rope.hpp>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "support/test_util.hpp"

namespace attnkit_cuda_test {

using namespace attnkit;
using namespace attnkit_test;

inline void cuda_ok(cudaError_t e) {
  if (e != cudaSuccess) FAIL("CUDA error: " << cudaGetErrorString(e));
}

template <class T>
struct DevBuf {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) { cuda_ok(cudaMalloc(&ptr, (count ? count : 1) * sizeof(T))); }
  DevBuf(const std::vector<T>& h) : DevBuf(h.size()) { upload(h); }
  ~DevBuf() { cudaFree(ptr); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void upload(const std::vector<T>& h) {
    cuda_ok(cudaMemcpy(ptr, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    cuda_ok(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  void poison() { cuda_ok(cudaMemset(ptr, 0xff, n * sizeof(T))); }  // all-ones: NaN in f16, bf16 and f32
};

// One problem. Padded unless `seq_q` is set (varlen, lengths per sequence).
struct Case {
  int64_t B = 1, Sq = 1, Sk = 1, Hq = 1, Hkv = 1, D = 128;
  Alignment align = Alignment::BottomRight;
  std::vector<int32_t> q_lens, kv_lens;  // padded lengths (empty = full)
  std::vector<int32_t> seq_q, seq_k;     // varlen lengths (empty = padded)
  float softcap = 0.f;
  bool alibi = false, sink = false;
  const RopeConfig* rope = nullptr;  // GPU rotates; the reference gets host-rotated copies
  cudaStream_t stream = nullptr;
  bool varlen() const { return !seq_q.empty(); }
};

struct Outcome {
  double err = 0, naive_err = 0, lse_err = 0;
  bool out_written = false, lse_written = false;
};

// How the GPU is called: through the public dispatch (all head dims), one
// head-dim instantiation of the mma.sync kernel, or the sm90 wgmma kernel
// explicitly (D 64 / 128). A template argument, so a case compiles only the
// kernels of its own entry: the public dispatch instantiates every head dim,
// RoPE form and kernel family per mask type, most of the CUDA tests' compile
// time when every mask type paid for it.
enum class Entry { Dispatch, Hdim, Sm90 };

template <class T, int D, Entry kEntry = Entry::Hdim, class MaskH, class MaskD>
Outcome run_case(const Case& c, const MaskH& mask_host, const MaskD& mask_dev) {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed << " B=" << c.B << " Sq=" << c.Sq << " Sk=" << c.Sk << " Hq=" << c.Hq << " Hkv=" << c.Hkv
               << " D=" << c.D);
  std::mt19937_64 rng(seed);
  REQUIRE(c.D == D);

  int64_t rows_q, rows_k;
  std::vector<int32_t> cu_q, cu_k;
  if (c.varlen()) {
    cu_q = {0};
    cu_k = {0};
    for (size_t b = 0; b < c.seq_q.size(); ++b) {
      cu_q.push_back(cu_q.back() + c.seq_q[b]);
      cu_k.push_back(cu_k.back() + c.seq_k[b]);
    }
    rows_q = cu_q.back();
    rows_k = cu_k.back();
  } else {
    rows_q = c.B * c.Sq;
    rows_k = c.B * c.Sk;
  }
  auto hq = random_vector<T>(static_cast<size_t>(rows_q * c.Hq * D), rng);
  auto hk = random_vector<T>(static_cast<size_t>(rows_k * c.Hkv * D), rng);
  auto hv = random_vector<T>(static_cast<size_t>(rows_k * c.Hkv * D), rng);
  // Padded rows past a sequence's kv length are NaN: a kernel that lets one
  // into a sum (P = 0 times NaN) fails every padded-length case. The
  // reference and the naive implementation never read them.
  if (!c.varlen() && !c.kv_lens.empty()) {
    uint16_t bits = 0xffff;  // NaN in fp16 and bf16
    T nan_value;
    std::memcpy(static_cast<void*>(&nan_value), &bits, sizeof bits);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t j = c.kv_lens[static_cast<size_t>(b)]; j < c.Sk; ++j)
        for (auto* h : {&hk, &hv}) std::fill_n(h->begin() + (b * c.Sk + j) * c.Hkv * D, c.Hkv * D, nan_value);
  }
  // Zero-length tensors still need non-null data pointers (views of nothing).
  for (auto* h : {&hq, &hk, &hv})
    if (h->empty()) h->resize(8);
  std::vector<float> slopes, sinks;
  for (int64_t h = 0; h < c.Hq; ++h) {
    slopes.push_back(std::pow(2.0f, -8.0f * static_cast<float>(h + 1) / static_cast<float>(c.Hq)));
    sinks.push_back(std::uniform_real_distribution<float>(-1.f, 3.f)(rng));
  }

  AttentionOptions oh;
  oh.alignment = c.align;
  oh.softcap = c.softcap;
  if (c.alibi) oh.alibi_slopes = slopes.data();
  if (c.sink) oh.sink_logits = sinks.data();
  if (!c.q_lens.empty()) oh.q_lens = c.q_lens.data();
  if (!c.kv_lens.empty()) oh.kv_lens = c.kv_lens.data();

  DevBuf<T> dq(hq), dk(hk), dv(hv), dout(static_cast<size_t>(rows_q * c.Hq * D));
  if (c.rope) {
    // The reference takes rotated q and k: rotate host copies at the DESIGN §2
    // positions (keys at j, queries at p(i) = i + Lk - Lq or i).
    std::vector<int64_t> qpos, kpos;
    const int64_t nseq = c.varlen() ? static_cast<int64_t>(c.seq_q.size()) : c.B;
    for (int64_t b = 0; b < nseq; ++b) {
      const int64_t lq = c.varlen() ? c.seq_q[b] : c.Sq, lk = c.varlen() ? c.seq_k[b] : c.Sk;
      for (int64_t i = 0; i < lq; ++i) qpos.push_back(c.align == Alignment::BottomRight ? i + lk - lq : i);
      for (int64_t j = 0; j < lk; ++j) kpos.push_back(j);
    }
    ApplyRopeOptions aq, ak;
    aq.positions = qpos.data();
    ak.positions = kpos.data();
    if (c.varlen()) {
      apply_rope_varlen(Tensor3<T>(hq.data(), {rows_q, c.Hq, D}), cu_q.data(), nseq, *c.rope, aq);
      apply_rope_varlen(Tensor3<T>(hk.data(), {rows_k, c.Hkv, D}), cu_k.data(), nseq, *c.rope, ak);
    } else {
      apply_rope(Tensor4<T>(hq.data(), {c.B, c.Sq, c.Hq, D}), *c.rope, aq);
      apply_rope(Tensor4<T>(hk.data(), {c.B, c.Sk, c.Hkv, D}), *c.rope, ak);
    }
  }
  const size_t lse_n = static_cast<size_t>(c.varlen() ? c.Hq * rows_q : c.B * c.Hq * c.Sq);
  DevBuf<float> dlse(lse_n), dslopes(slopes), dsinks(sinks);
  DevBuf<int32_t> dql(c.q_lens.empty() ? std::vector<int32_t>{0} : c.q_lens);
  DevBuf<int32_t> dkl(c.kv_lens.empty() ? std::vector<int32_t>{0} : c.kv_lens);
  DevBuf<int32_t> dcq(cu_q.empty() ? std::vector<int32_t>{0} : cu_q),
      dck(cu_k.empty() ? std::vector<int32_t>{0} : cu_k);
  dout.poison();
  dlse.poison();

  AttentionOptions od = oh;
  od.lse = dlse.ptr;
  od.alibi_slopes = c.alibi ? dslopes.ptr : nullptr;
  od.sink_logits = c.sink ? dsinks.ptr : nullptr;
  od.q_lens = c.q_lens.empty() ? nullptr : dql.ptr;
  od.kv_lens = c.kv_lens.empty() ? nullptr : dkl.ptr;
  od.cuda_stream = c.stream;
  od.rope = c.rope;

  ReferenceOutput ref;
  std::vector<T> naive;
  auto run_gpu = [&](const AttentionParams<T>& p) {
    if constexpr (kEntry == Entry::Dispatch) {
      cuda::attention_forward(p, mask_dev, od);
    } else if constexpr (kEntry == Entry::Sm90) {
      if constexpr (D == 64 || D == 128) {
        cuda::check_gpu_problem(p, od);
        cuda::sm90::forward_sm90_with<cuda::sm90::Sm90Default<T, D, MaskD>>(p, mask_dev,
                                                                            static_cast<cudaStream_t>(od.cuda_stream));
      } else {
        FAIL("the sm90 kernel takes head dims 64 and 128");
      }
    } else {
      cuda::check_gpu_problem(p, od);
      cuda::forward_hdim<D>(p, mask_dev, static_cast<cudaStream_t>(od.cuda_stream));
    }
    cuda_ok(cudaStreamSynchronize(c.stream));
  };

  if (c.varlen()) {
    const int64_t B = static_cast<int64_t>(c.seq_q.size());
    int64_t mq = 0, mk = 0;
    for (size_t b = 0; b < c.seq_q.size(); ++b) {
      mq = std::max<int64_t>(mq, c.seq_q[b]);
      mk = std::max<int64_t>(mk, c.seq_k[b]);
    }
    const Tensor3<const T> q(hq.data(), {rows_q, c.Hq, D}), k(hk.data(), {rows_k, c.Hkv, D}),
        v(hv.data(), {rows_k, c.Hkv, D});
    VarlenSeqs sh{cu_q.data(), cu_k.data(), B, 0, 0};
    VarlenSeqs sd{dcq.ptr, dck.ptr, B, mq, mk};
    const Tensor3<const T> q_d(dq.ptr, {rows_q, c.Hq, D}), k_d(dk.ptr, {rows_k, c.Hkv, D}),
        v_d(dv.ptr, {rows_k, c.Hkv, D});
    const Tensor3<T> o_d(dout.ptr, {rows_q, c.Hq, D});
    run_gpu(make_params_varlen<T>(q_d, k_d, v_d, o_d, sd, od, /*host_lengths=*/false));
    ref = reference_attention_varlen<T>(q, k, v, sh, mask_host, oh);
    std::vector<T> dummy(static_cast<size_t>(rows_q * c.Hq * D));
    const Tensor3<T> o_h(dummy.data(), {rows_q, c.Hq, D});
    naive = naive_same_dtype(make_params_varlen<T>(q, k, v, o_h, sh, oh), mask_host, rows_q);
  } else {
    const Tensor4<const T> q(hq.data(), {c.B, c.Sq, c.Hq, D}), k(hk.data(), {c.B, c.Sk, c.Hkv, D}),
        v(hv.data(), {c.B, c.Sk, c.Hkv, D});
    const Tensor4<const T> q_d(dq.ptr, {c.B, c.Sq, c.Hq, D}), k_d(dk.ptr, {c.B, c.Sk, c.Hkv, D}),
        v_d(dv.ptr, {c.B, c.Sk, c.Hkv, D});
    const Tensor4<T> o_d(dout.ptr, {c.B, c.Sq, c.Hq, D});
    run_gpu(make_params<T>(q_d, k_d, v_d, o_d, od, /*host_lengths=*/false));
    ref = reference_attention<T>(q, k, v, mask_host, oh);
    std::vector<T> dummy(static_cast<size_t>(rows_q * c.Hq * D));
    const Tensor4<T> o_h(dummy.data(), {c.B, c.Sq, c.Hq, D});
    naive = naive_same_dtype(make_params<T>(q, k, v, o_h, oh), mask_host, rows_q);
  }

  const std::vector<T> out = dout.download();
  const std::vector<float> lse = dlse.download();
  Outcome r;
  r.out_written = all_finite(out);
  r.lse_written = true;
  for (float x : lse)
    if (std::isnan(x)) r.lse_written = false;
  r.err = rel_l2(out, ref.out);
  r.naive_err = rel_l2(naive, ref.out);
  r.lse_err = lse_max_abs_err(lse, ref.lse);
  return r;
}

// The assertions every case makes.
inline void check_outcome(const Outcome& r) {
  INFO("rel_l2 " << r.err << " (naive same-dtype " << r.naive_err << "), lse max abs err " << r.lse_err);
  CHECK(r.out_written);
  CHECK(r.lse_written);
  CHECK(r.err <= 2.0 * r.naive_err + 1e-5);
  CHECK(r.lse_err <= 5e-3);
}

template <class T, int D, Entry kEntry = Entry::Hdim, class MaskH, class MaskD>
void check_case(const Case& c, const MaskH& mh, const MaskD& md) {
  check_outcome(run_case<T, D, kEntry>(c, mh, md));
}
template <class T, int D, Entry kEntry = Entry::Hdim, class Mask>
void check_case(const Case& c, const Mask& m) {
  check_outcome(run_case<T, D, kEntry>(c, m, m));
}

}  // namespace attnkit_cuda_test
