// The oracle: a deliberately simple double-precision attention that
// materialises the score matrix with Eigen. It shares no arithmetic with the
// kernels (only the argument validation and index bookkeeping), so a kernel
// bug cannot hide in it. O(Sq * Sk) memory per head: tests only.
#pragma once

#include <Eigen/Dense>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "attnkit/core/dtype.hpp"
#include "attnkit/core/make_params.hpp"
#include "attnkit/mask/validate.hpp"

namespace attnkit {

// Output in the layout of `out` made contiguous: padded [B, Sq, Hq, Dv]
// (padded rows 0), varlen [total_q, Hq, Dv]; lse as the kernels write it:
// padded [B, Hq, Sq], varlen [Hq, total_q]; -inf for rows with no allowed key.
struct ReferenceOutput {
  std::vector<double> out;
  std::vector<double> lse;
  int64_t q_heads = 0;
  int64_t v_head_dim = 0;
};

namespace detail {

template <class T>
Eigen::MatrixXd gather_rows(const AttentionParams<T>& p, int64_t b, int64_t h, int64_t n, int64_t dim, int which) {
  Eigen::MatrixXd m(n, dim);
  for (int64_t r = 0; r < n; ++r) {
    const T* row = which == 0 ? p.q_row(b, r, h) : which == 1 ? p.k_row(b, r, h) : p.v_row(b, r, h);
    for (int64_t d = 0; d < dim; ++d) m(r, d) = static_cast<double>(to_float(row[d]));
  }
  return m;
}

template <class T, class Mask>
ReferenceOutput reference_impl(const AttentionParams<T>& p, const Mask& mask, int64_t out_rows) {
  const ProblemShape& s = p.shape;
  const int64_t Hq = s.q_heads, Dv = s.v_head_dim, D = s.head_dim;
  const double ninf = -std::numeric_limits<double>::infinity();
  ReferenceOutput r;
  r.q_heads = Hq;
  r.v_head_dim = Dv;
  r.out.assign(static_cast<size_t>(out_rows * Hq * Dv), 0.0);
  const int64_t lse_size = s.varlen() ? Hq * s.total_q : s.batch * Hq * s.q_capacity;
  r.lse.assign(static_cast<size_t>(lse_size), ninf);
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t lq = s.q_len(b), lk = s.kv_len(b);
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t hk = s.kv_head_of(h);
      const SeqCtx ctx = s.ctx(b, h);
      const Eigen::MatrixXd Q = gather_rows(p, b, h, lq, D, 0);
      const Eigen::MatrixXd K = gather_rows(p, b, hk, lk, D, 1);
      const Eigen::MatrixXd V = gather_rows(p, b, hk, lk, Dv, 2);
      Eigen::MatrixXd S = (Q * K.transpose()) * static_cast<double>(p.scale);
      for (int64_t i = 0; i < lq; ++i) {
        double mx = ninf;
        for (int64_t j = 0; j < lk; ++j) {
          double x = S(i, j);
          if (p.softcap > 0.0f) x = p.softcap * std::tanh(x / p.softcap);
          if (p.alibi_slopes) x += static_cast<double>(p.alibi_slopes[h]) * static_cast<double>(j - ctx.pos(i));
          if (!mask(ctx, i, j)) x = ninf;
          S(i, j) = x;
          if (x > mx) mx = x;
        }
        const int64_t orow = (s.varlen() ? s.q_start(b) + i : b * s.q_capacity + i);
        double* o = &r.out[static_cast<size_t>((orow * Hq + h) * Dv)];
        const int64_t lse_idx =
            (s.varlen() ? s.q_start(b) : b * Hq * s.q_capacity) + h * (s.varlen() ? s.total_q : s.q_capacity) + i;
        if (mx == ninf) continue;  // no allowed key: out 0, lse -inf
        double sum = 0.0;
        Eigen::VectorXd acc = Eigen::VectorXd::Zero(Dv);
        for (int64_t j = 0; j < lk; ++j) {
          if (S(i, j) == ninf) continue;
          const double e = std::exp(S(i, j) - mx);
          sum += e;
          acc += e * V.row(j).transpose();
        }
        double denom = sum;
        if (p.sink_logits) denom += std::exp(static_cast<double>(p.sink_logits[h]) - mx);
        for (int64_t d = 0; d < Dv; ++d) o[d] = acc(d) / denom;
        r.lse[static_cast<size_t>(lse_idx)] = mx + std::log(sum);
      }
    }
  }
  return r;
}

}  // namespace detail

// Padded BSHD (with optional q_lens / kv_lens in `o`).
template <class T, class Mask>
ReferenceOutput reference_attention(const Tensor4<const T>& q, const Tensor4<const T>& k, const Tensor4<const T>& v,
                                    const Mask& mask, const AttentionOptions& o = {}) {
  if (o.rope) detail::fail("the reference takes pre-rotated q and k; apply RoPE in the test");
  // `out` is never written by the reference; the view only carries its shape.
  T dummy{};
  const Tensor4<T> out(&dummy, {q.shape[0], q.shape[1], q.shape[2], v.shape[3]}, {0, 0, 0, 1});
  const AttentionParams<T> p = make_params<T>(q, k, v, out, o);
  validate_mask_for(mask, p.shape);
  return detail::reference_impl(p, mask, q.shape[0] * q.shape[1]);
}

// Packed varlen.
template <class T, class Mask>
ReferenceOutput reference_attention_varlen(const Tensor3<const T>& q, const Tensor3<const T>& k,
                                           const Tensor3<const T>& v, const VarlenSeqs& seqs, const Mask& mask,
                                           const AttentionOptions& o = {}) {
  if (o.rope) detail::fail("the reference takes pre-rotated q and k; apply RoPE in the test");
  T dummy{};
  const Tensor3<T> out(&dummy, {q.shape[0], q.shape[1], v.shape[2]}, {0, 0, 1});
  const AttentionParams<T> p = make_params_varlen<T>(q, k, v, out, seqs, o);
  validate_mask_for(mask, p.shape);
  return detail::reference_impl(p, mask, q.shape[0]);
}

}  // namespace attnkit
