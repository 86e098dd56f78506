// Turns the public views + options into AttentionParams, validating everything
// first (DESIGN §7): a call that throws has written nothing.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "attnkit/core/error.hpp"
#include "attnkit/core/options.hpp"
#include "attnkit/core/params.hpp"
#include "attnkit/core/tensor.hpp"

namespace attnkit {

// Largest head dim any kernel supports.
inline constexpr int64_t kMaxHeadDim = 256;

namespace detail {

template <class V>
void require_last_contiguous(const V& t, const char* name) {
  require_not_null(t.data, name);
  constexpr int R = V::rank;
  if (t.stride[R - 1] != 1)
    fail_arg(concat(name, ".stride[", R - 1, "]").c_str(), t.stride[R - 1], "must be 1 (last dimension contiguous)");
  for (int d = 0; d < R; ++d)
    if (t.shape[d] < 0) fail_arg(concat(name, ".shape[", d, "]").c_str(), t.shape[d], "must be >= 0");
}

inline void check_heads(int64_t hq, int64_t hkv) {
  require(hq >= 1, "num_q_heads", hq, "must be >= 1");
  require(hkv >= 1, "num_kv_heads", hkv, "must be >= 1");
  if (hq % hkv != 0) fail(concat("num_q_heads (", hq, ") must be a multiple of num_kv_heads (", hkv, ")"));
}

inline void check_dims(int64_t d, int64_t dv) {
  if (!(d >= 1 && d <= kMaxHeadDim)) fail_arg("head_dim", d, concat("must be in [1, ", kMaxHeadDim, "]"));
  if (!(dv >= 1 && dv <= kMaxHeadDim)) fail_arg("v_head_dim", dv, concat("must be in [1, ", kMaxHeadDim, "]"));
}

template <class T>
void fill_common(AttentionParams<T>& p, const AttentionOptions& o) {
  const float s = o.scale ? *o.scale : 1.0f / std::sqrt(static_cast<float>(p.shape.head_dim));
  require(std::isfinite(s), "scale", s, "must be finite");
  require(o.softcap >= 0.0f && std::isfinite(o.softcap), "softcap", o.softcap, "must be finite and >= 0 (0 = off)");
  p.scale = s;
  p.softcap = o.softcap;
  p.alibi_slopes = o.alibi_slopes;
  p.sink_logits = o.sink_logits;
  p.lse = o.lse;
  p.q_positions = o.q_positions;
  p.kv_positions = o.kv_positions;
}

}  // namespace detail

// Padded BSHD: q [B, Sq, Hq, D], k [B, Sk, Hkv, D], v [B, Sk, Hkv, Dv], out [B, Sq, Hq, Dv].
// `host_lengths`: q_lens / kv_lens are readable here (false for device memory,
// where the CUDA front door checks them itself).
template <class T>
AttentionParams<T> make_params(const Tensor4<const T>& q, const Tensor4<const T>& k, const Tensor4<const T>& v,
                               const Tensor4<T>& out, const AttentionOptions& o, bool host_lengths = true) {
  using namespace detail;
  require_last_contiguous(q, "q");
  require_last_contiguous(k, "k");
  require_last_contiguous(v, "v");
  require_last_contiguous(out, "out");
  const int64_t B = q.shape[0], Sq = q.shape[1], Hq = q.shape[2], D = q.shape[3];
  const int64_t Sk = k.shape[1], Hkv = k.shape[2], Dv = v.shape[3];
  if (!(k.shape[0] == B)) fail_arg("k.shape[0]", k.shape[0], concat("must equal batch size of q (", B, ")"));
  if (!(v.shape[0] == B)) fail_arg("v.shape[0]", v.shape[0], concat("must equal batch size of q (", B, ")"));
  if (!(out.shape[0] == B)) fail_arg("out.shape[0]", out.shape[0], concat("must equal batch size of q (", B, ")"));
  if (!(k.shape[3] == D)) fail_arg("k.shape[3]", k.shape[3], concat("must equal the head dim of q (", D, ")"));
  if (!(v.shape[1] == Sk)) fail_arg("v.shape[1]", v.shape[1], concat("must equal the key length of k (", Sk, ")"));
  if (!(v.shape[2] == Hkv)) fail_arg("v.shape[2]", v.shape[2], concat("must equal num_kv_heads of k (", Hkv, ")"));
  if (!(out.shape[1] == Sq))
    fail_arg("out.shape[1]", out.shape[1], concat("must equal the query length of q (", Sq, ")"));
  if (!(out.shape[2] == Hq)) fail_arg("out.shape[2]", out.shape[2], concat("must equal num_q_heads of q (", Hq, ")"));
  if (!(out.shape[3] == Dv)) fail_arg("out.shape[3]", out.shape[3], concat("must equal the head dim of v (", Dv, ")"));
  check_heads(Hq, Hkv);
  check_dims(D, Dv);
  if (host_lengths) {
    for (int64_t b = 0; b < B; ++b) {
      if (o.q_lens && (o.q_lens[b] < 0 || o.q_lens[b] > Sq))
        fail_arg(concat("q_lens[", b, "]").c_str(), o.q_lens[b], concat("must be in [0, Sq = ", Sq, "]"));
      if (o.kv_lens && (o.kv_lens[b] < 0 || o.kv_lens[b] > Sk))
        fail_arg(concat("kv_lens[", b, "]").c_str(), o.kv_lens[b], concat("must be in [0, Sk = ", Sk, "]"));
    }
  }
  AttentionParams<T> p;
  ProblemShape& s = p.shape;
  s.batch = B;
  s.q_heads = Hq;
  s.kv_heads = Hkv;
  s.head_dim = D;
  s.v_head_dim = Dv;
  s.q_capacity = Sq;
  s.kv_capacity = Sk;
  s.q_lens = o.q_lens;
  s.kv_lens = o.kv_lens;
  s.alignment = o.alignment;
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.out = out.data;
  p.q_layout = {q.stride[0], q.stride[1], q.stride[2]};
  p.k_layout = {k.stride[0], k.stride[1], k.stride[2]};
  p.v_layout = {v.stride[0], v.stride[1], v.stride[2]};
  p.o_layout = {out.stride[0], out.stride[1], out.stride[2]};
  p.lse_batch_stride = Hq * Sq;
  p.lse_head_stride = Sq;
  p.q_pos_batch_stride = Sq;
  p.kv_pos_batch_stride = Sk;
  fill_common(p, o);
  return p;
}

// Packed varlen: q [total_q, Hq, D], k [total_k, Hkv, D], v [total_k, Hkv, Dv], out [total_q, Hq, Dv].
template <class T>
AttentionParams<T> make_params_varlen(const Tensor3<const T>& q, const Tensor3<const T>& k, const Tensor3<const T>& v,
                                      const Tensor3<T>& out, const VarlenSeqs& seqs, const AttentionOptions& o,
                                      bool host_lengths = true) {
  using namespace detail;
  require_last_contiguous(q, "q");
  require_last_contiguous(k, "k");
  require_last_contiguous(v, "v");
  require_last_contiguous(out, "out");
  require_not_null(seqs.cu_seqlens_q, "cu_seqlens_q");
  require_not_null(seqs.cu_seqlens_k, "cu_seqlens_k");
  require(seqs.batch >= 0, "batch", seqs.batch, "must be >= 0");
  if (o.q_lens || o.kv_lens) fail("q_lens / kv_lens are for the padded layout; varlen lengths come from cu_seqlens");
  const int64_t Tq = q.shape[0], Hq = q.shape[1], D = q.shape[2];
  const int64_t Tk = k.shape[0], Hkv = k.shape[1], Dv = v.shape[2];
  if (!(k.shape[2] == D)) fail_arg("k.shape[2]", k.shape[2], concat("must equal the head dim of q (", D, ")"));
  if (!(v.shape[0] == Tk)) fail_arg("v.shape[0]", v.shape[0], concat("must equal total_k of k (", Tk, ")"));
  if (!(v.shape[1] == Hkv)) fail_arg("v.shape[1]", v.shape[1], concat("must equal num_kv_heads of k (", Hkv, ")"));
  if (!(out.shape[0] == Tq)) fail_arg("out.shape[0]", out.shape[0], concat("must equal total_q of q (", Tq, ")"));
  if (!(out.shape[1] == Hq)) fail_arg("out.shape[1]", out.shape[1], concat("must equal num_q_heads of q (", Hq, ")"));
  if (!(out.shape[2] == Dv)) fail_arg("out.shape[2]", out.shape[2], concat("must equal the head dim of v (", Dv, ")"));
  check_heads(Hq, Hkv);
  check_dims(D, Dv);
  int64_t max_q = seqs.max_seqlen_q, max_k = seqs.max_seqlen_k;
  if (host_lengths) {
    const int32_t* cq = seqs.cu_seqlens_q;
    const int32_t* ck = seqs.cu_seqlens_k;
    require(cq[0] == 0, "cu_seqlens_q[0]", cq[0], "must be 0");
    require(ck[0] == 0, "cu_seqlens_k[0]", ck[0], "must be 0");
    int64_t mq = 0, mk = 0;
    for (int64_t b = 0; b < seqs.batch; ++b) {
      if (cq[b + 1] < cq[b])
        fail_arg(concat("cu_seqlens_q[", b + 1, "]").c_str(), cq[b + 1],
                 concat("must be >= cu_seqlens_q[", b, "] (", cq[b], ")"));
      if (ck[b + 1] < ck[b])
        fail_arg(concat("cu_seqlens_k[", b + 1, "]").c_str(), ck[b + 1],
                 concat("must be >= cu_seqlens_k[", b, "] (", ck[b], ")"));
      mq = std::max<int64_t>(mq, cq[b + 1] - cq[b]);
      mk = std::max<int64_t>(mk, ck[b + 1] - ck[b]);
    }
    if (!(cq[seqs.batch] <= Tq))
      fail_arg("cu_seqlens_q[batch]", cq[seqs.batch], concat("must be <= total_q (", Tq, ")"));
    if (!(ck[seqs.batch] <= Tk))
      fail_arg("cu_seqlens_k[batch]", ck[seqs.batch], concat("must be <= total_k (", Tk, ")"));
    if (max_q == 0) max_q = mq;
    if (max_k == 0) max_k = mk;
    if (!(max_q >= mq)) fail_arg("max_seqlen_q", max_q, concat("must be >= the longest query sequence (", mq, ")"));
    if (!(max_k >= mk)) fail_arg("max_seqlen_k", max_k, concat("must be >= the longest key sequence (", mk, ")"));
  } else {
    require(max_q > 0 || Tq == 0, "max_seqlen_q", max_q, "must be given for device-resident cu_seqlens");
    require(max_k > 0 || Tk == 0, "max_seqlen_k", max_k, "must be given for device-resident cu_seqlens");
  }
  AttentionParams<T> p;
  ProblemShape& s = p.shape;
  s.batch = seqs.batch;
  s.q_heads = Hq;
  s.kv_heads = Hkv;
  s.head_dim = D;
  s.v_head_dim = Dv;
  s.q_capacity = max_q;
  s.kv_capacity = max_k;
  s.total_q = Tq;
  s.total_k = Tk;
  s.cu_q = seqs.cu_seqlens_q;
  s.cu_k = seqs.cu_seqlens_k;
  s.alignment = o.alignment;
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.out = out.data;
  p.q_layout = {0, q.stride[0], q.stride[1]};
  p.k_layout = {0, k.stride[0], k.stride[1]};
  p.v_layout = {0, v.stride[0], v.stride[1]};
  p.o_layout = {0, out.stride[0], out.stride[1]};
  p.lse_batch_stride = 0;
  p.lse_head_stride = Tq;
  fill_common(p, o);
  return p;
}

}  // namespace attnkit
